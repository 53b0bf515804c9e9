"""Shared fixtures. torchvision and timm are test references only; the package never imports them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from inception_deploy import get_spec
from inception_deploy.models.samples import random_batch, reestimate_batchnorm

# The figures of ../shared/reference/FACTS.md, typed in independently of the package's specs.
REFERENCE_PARAMS = {
    "googlenet": (6_624_904, 13_004_888),
    "inception_v2": (18_205_320, 22_608_624),
    "inception_v3": (23_834_568, 27_161_264),
    "inception_v4": (42_679_816, None),
    "inception_resnet_v2": (55_843_464, None),
}
VARIANTS = list(REFERENCE_PARAMS)
# The real CLI in a process of its own: `[sys.executable, "-c", CLI, *args]` (Ctrl-C and resource-limit tests).
CLI = "import sys; from inception_deploy.launch import main; sys.argv = ['inception-deploy', *sys.argv[1:]]; main()"
PUBLIC_VARIANTS = ["googlenet", "inception_v3", "inception_v4", "inception_resnet_v2"]


def sample_photographs() -> Path:
    """The folder of scikit-learn's two sample photographs (china.jpg, flower.jpg): test data only. Where
    scikit-learn is not installed (the lent GPU machine), INCEPTION_DEPLOY_TEST_IMAGES names a folder holding them."""
    if os.environ.get("INCEPTION_DEPLOY_TEST_IMAGES"):
        return Path(os.environ["INCEPTION_DEPLOY_TEST_IMAGES"])
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


def library_model(name: str) -> nn.Module:
    """The torchvision/timm model whose checkpoints `name` loads, configured as its public weights are.

    inception_v2 has no public weights: its reference is our own model in the seed's layout, aux head included.
    """
    if name == "inception_v2":
        from inception_deploy.models import build_model

        return build_model(name, aux_logits=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "googlenet":
            import torchvision

            return torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=True, init_weights=True)
        if name == "inception_v3":
            import torchvision

            return torchvision.models.inception_v3(
                weights=None, aux_logits=True, transform_input=True, init_weights=True
            )
        import timm

        return timm.create_model(name, pretrained=False)


@pytest.fixture(scope="session")
def library_checkpoints(tmp_path_factory):
    """name -> (path of a saved state dict, the library model in eval mode, a seeded input batch).

    Random init, conditioned as the package conditions untrained models (BatchNorm shift 1, statistics
    re-estimated), so that outputs are well scaled and the net is as well conditioned as a trained one.
    """
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}

    def get(name: str):
        if name not in made:
            torch.manual_seed(0)
            model = library_model(name)
            x = random_batch(get_spec(name), 3, seed=7)
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.bias.fill_(1.0)
            reestimate_batchnorm(model, x)
            model.eval()
            path = root / f"{name}.pth"
            torch.save(model.state_dict(), path)
            made[name] = (path, model, x)
        return made[name]

    return get


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory):
    """scikit-learn's two sample photographs and seeded augmentations of them (crops, flips, brightness): 24 images."""
    import random
    import shutil

    from PIL import Image, ImageEnhance, ImageOps

    source = sample_photographs()
    folder = tmp_path_factory.mktemp("calib")
    rng = random.Random(0)
    for name in ("china.jpg", "flower.jpg"):
        image = Image.open(source / name).convert("RGB")
        shutil.copy(source / name, folder / name)
        for i in range(11):
            w, h = image.size
            s = rng.uniform(0.4, 0.95)
            cw, ch = int(w * s), int(h * s)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            crop = image.crop((x, y, x + cw, y + ch))
            if rng.random() < 0.5:
                crop = ImageOps.mirror(crop)
            ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3)).save(folder / f"{name[:-4]}_{i}.jpg")
    return folder


@pytest.fixture(scope="session")
def exported(tmp_path_factory, library_checkpoints, calib_dir):
    """name -> (export dir, manifest): each variant exported once, fp32, fp16 and int8 in both forms (TensorRT's and
    ONNX Runtime's CPU form, calibrated on calib_dir), from its library checkpoint. Shared: tests that add to an export
    work on a copy (export_copy)."""
    from inception_deploy import export_onnx

    root = tmp_path_factory.mktemp("export")
    made = {}

    def get(name: str):
        if name not in made:
            weights, _, _ = library_checkpoints(name)
            out = root / name
            made[name] = (out, export_onnx(name, weights=weights, fp16=True, int8=True, int8_form="tensorrt,cpu",
                                           calib=calib_dir, out_dir=out))
        return made[name]

    return get


@pytest.fixture
def export_copy(exported, tmp_path):
    """name -> a private copy of exported(name)'s directory (artifacts hard-linked, manifest copied)."""
    import os
    import shutil

    def get(name: str):
        source, _ = exported(name)
        target = tmp_path / name
        target.mkdir()
        for path in source.iterdir():
            if path.name == "manifest.json":
                shutil.copy(path, target / path.name)
            else:
                os.link(path, target / path.name)
        return target

    return get


def run_and_interrupt(args: list[str], cwd: Path | None, ready, delay_s: float = 0.0,
                      sig: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Start the real CLI, wait until `ready(step_lines)` says it is where the test wants it (its steps are
    printed with INCEPTION_DEPLOY_PROGRESS=lines), then send it a real signal (SIGINT: Ctrl-C; SIGTERM, SIGHUP)
    and collect what it says."""
    env = {**os.environ, "INCEPTION_DEPLOY_PROGRESS": "lines"}
    process = subprocess.Popen([sys.executable, "-c", CLI, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    steps = []
    try:
        for line in process.stderr:
            if not line.startswith("step: "):
                steps.append(line)  # an early error: keep it for the report
                break
            steps.append(line)
            if ready(steps):
                break
        else:
            pytest.fail(f"the command ended before the moment to interrupt it: {''.join(steps)}")
        time.sleep(delay_s)
        process.send_signal(sig)
        stdout, rest = process.communicate(timeout=300)
    finally:
        process.kill()
    said = [line for line in (''.join(steps) + rest).splitlines() if not line.startswith("step: ")]
    return subprocess.CompletedProcess(args, process.returncode, stdout, "\n".join(said))


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """googlenet with a 10-class head fitted on scikit-learn's digits, and its ImageFolder trees (tests/digits.py)."""
    from digits import make_digits_model

    return make_digits_model(tmp_path_factory.mktemp("digits"))
