"""parity: every backend against the PyTorch model, on random and real inputs, and refusing bad ones."""

import json
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from conftest import VARIANTS, sample_photographs
from onnx import numpy_helper
from typer.testing import CliRunner

from inception_deploy.cli import app
from inception_deploy.parity.check import check_parity

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def photographs(tmp_path_factory):
    """scikit-learn's two sample photographs (test data only), plus files that are not images."""
    source = sample_photographs()
    folder = tmp_path_factory.mktemp("photos")
    for name in ("china.jpg", "flower.jpg"):
        shutil.copy(source / name, folder / name)
    (folder / "broken.jpg").write_bytes((source / "china.jpg").read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.mark.parametrize("name", VARIANTS)
def test_torch_vs_onnxruntime_cpu_fp32_and_fp16(name, exported):
    out, _ = exported(name)
    report = check_parity(name, export_dir=out, precisions="fp32,fp16", samples=4)
    assert [(r.artifact, r.precision) for r in report.rows] == [("model.onnx", "fp32"), ("model.fp16.onnx", "fp16")]
    assert report.passed and not report.untrained, report.to_dict()
    fp32, fp16 = report.rows
    assert fp32.diff.scaled < 1e-3 and fp32.diff.top1_agreement == 1.0
    assert fp16.diff.cosine > 0.999 and fp16.diff.top5_overlap >= 0.8


def test_parity_v3_on_real_photographs_with_torch_fp16_too(exported, photographs):
    out, _ = exported("inception_v3")
    result = runner.invoke(app, ["parity", "v3", "--dir", str(out), "--images", str(photographs), "--samples", "2",
                                 "--backends", "onnxruntime,torch", "--precision", "fp32,fp16", "--json", "-"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["inputs"]["images"] == ["china.jpg", "flower.jpg"]
    assert report["inputs"]["random"] == 2 and report["inputs"]["total"] == 4
    assert {s["file"] for s in report["inputs"]["skipped_images"]} == {"broken.jpg", "notes.txt"}
    assert "skipped image broken.jpg" in result.stderr
    rows = {(r["backend"], r["precision"]): r for r in report["rows"]}
    assert set(rows) == {("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("torch", "fp16")}
    assert all(r["passed"] and r["cosine"] > 0.999 for r in rows.values())


def _tamper(src: Path, dst: Path, kernel_shape: tuple) -> None:
    """Flip the sign of the one-or-more convolution weights of this (unique to one block) shape."""
    model = onnx.load(str(src))
    initializers = {i.name: i for i in model.graph.initializer}
    hit = 0
    for node in model.graph.node:
        weight = initializers.get(node.input[1]) if node.op_type == "Conv" else None
        if weight is not None and tuple(weight.dims) == kernel_shape:
            weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
            hit += 1
    assert hit
    onnx.save(model, str(dst))


def test_a_tampered_onnx_fails_and_localize_names_the_block(tmp_path, exported, library_checkpoints):
    out, _ = exported("inception_v3")
    weights, _, _ = library_checkpoints("inception_v3")
    tampered = tmp_path / "tampered.onnx"
    _tamper(out / "model.onnx", tampered, (128, 768, 1, 1))  # c7=128: only Mixed_6b has it
    md = tmp_path / "parity.md"
    result = runner.invoke(app, ["parity", "v3", "--onnx", str(tampered), "--weights", str(weights), "--samples", "2",
                                 "--localize", "--report", str(md), "--json", str(tmp_path / "p.json")])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.stdout and "first leaves tolerance at block Mixed_6b (InceptionC)" in result.stdout
    report = json.loads((tmp_path / "p.json").read_text())
    [row] = report["rows"]
    assert row["passed"] is False and row["first_divergent_block"] == "Mixed_6b (InceptionC)"
    blocks = {b["block"]: b for b in row["blocks"]}
    assert blocks["Mixed_6a (InceptionB)"]["within"] and not blocks["Mixed_6b (InceptionC)"]["within"]
    assert "## Where onnxruntime tampered.onnx (fp32) diverges" in md.read_text()


def test_bad_inputs(tmp_path, exported, photographs):
    v3_dir, _ = exported("inception_v3")
    g_dir, _ = exported("googlenet")

    def one_line(args, code, *fragments):
        result = runner.invoke(app, ["parity", *args])
        assert result.exit_code == code, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        for fragment in fragments:
            assert fragment in lines[0], lines[0]

    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes((v3_dir / "model.onnx").read_bytes()[:5000])
    one_line(["v3", "--onnx", str(corrupt)], 2, "not a readable ONNX model")
    one_line(["v3", "--onnx", str(g_dir / "model.onnx")], 2, "not an ONNX export of this inception_v3", "looks like "
                                                                                                        "googlenet")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line(["v3", "--dir", str(v3_dir), "--images", str(empty)], 2, "holds no readable image")
    one_line(["v3", "--dir", str(v3_dir), "--backends", "onnxruntime,magic"], 2, "unknown backend 'magic'")
    one_line(["v3", "--dir", str(tmp_path / "nowhere")], 2, "no export of inception_v3", "inception-deploy export")
    one_line(["v3", "--onnx", str(v3_dir / "model.onnx"), "--precision", "int8"], 2, "no int8 artifact", "--int8")
    one_line(["v3", "--dir", str(v3_dir), "--precision", "fp64"], 2, "unknown precision 'fp64'")
    # nothing to compare: never a FAIL that checked nothing
    one_line(["v3", "--dir", str(v3_dir), "--backends", "torch", "--precision", "fp32"], 2,
             "nothing to compare with the reference (torch-cpu-fp32)", "the reference itself", "--backends onnxruntime")
    one_line(["v3", "--dir", str(v3_dir), "--reference", "onnxruntime", "--precision", "fp32"], 2,
             "nothing to compare with the reference (onnxruntime-cpu-fp32)", "the reference itself", "--backends torch")
    one_line(["v3", "--dir", str(v3_dir), "--backends", "torch", "--precision", "int8"], 2,
             "nothing to compare", "torch: torch runs no int8")
    # ONNX Runtime's CPU int8 form asked of a backend that cannot run it; each form's file where the other is asked for
    one_line(["v3", "--dir", str(v3_dir), "--backends", "onnxruntime-cuda", "--precision", "int8-cpu"], 2,
             "in int8-cpu", "int8-cpu is ONNX Runtime's CPU form", "TensorRT and the CUDA provider take int8")
    one_line(["v3", "--onnx", str(v3_dir / "model.int8-cpu.onnx"), "--precision", "int8"], 2, "no int8 artifact")
    one_line(["v3", "--onnx", str(v3_dir / "model.int8.onnx"), "--precision", "int8-cpu"], 2, "no int8-cpu artifact",
             "--int8-form cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the missing-GPU path cannot be shown "
                                                      "here")
def test_a_gpu_backend_without_a_gpu_exits_3(exported):
    out, _ = exported("googlenet")
    for backend, fragment in (("onnxruntime-cuda", "could not start CUDAExecutionProvider"), ("torch-cuda", "no CUDA "
                                                                                                            "device")):
        result = runner.invoke(app, ["parity", "v1", "--dir", str(out), "--backends", backend, "--samples", "1"])
        assert result.exit_code == 3, result.output
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs on the lent device")
@pytest.mark.parametrize("name", VARIANTS)
def test_gpu_backends(name, exported):
    out, _ = exported(name)
    report = check_parity(
        name, export_dir=out, backends="onnxruntime-cuda,torch-cuda", precisions="fp32,fp16", samples=8
    )
    assert report.passed, report.to_dict()
    assert {(r.backend, r.precision) for r in report.rows} >= {
        ("onnxruntime-cuda", "fp32"), ("onnxruntime-cuda", "fp16"), ("torch-cuda", "fp16")}


def _shuffled_but_top1(ref, rng):
    """Each row's values shuffled among its classes, its top-1 class kept: the same offset, another output."""
    import numpy as np

    act = ref.copy()
    for row, out in zip(ref, act):
        top = int(row.argmax())
        others = np.delete(np.arange(row.size), top)
        out[others] = row[rng.permutation(others)]
    return act


def test_a_shared_offset_does_not_hide_a_wrong_output():
    """Cosine on raw logits is near 1 whenever every logit of a row shares a large offset: the verdict uses the
    centred cosine, which a shuffled output fails, while a close output passes both."""
    import numpy as np

    from inception_deploy.core.compare import difference
    from inception_deploy.core.tolerances import TOLERANCES

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(8, 1000)) + 50.0  # a common per-row offset
    wrong = difference(ref, _shuffled_but_top1(ref, rng))
    assert wrong.cosine > 0.999 and wrong.top1_agreement == 1.0  # what the raw cosine verdict passed
    assert abs(wrong.cosine_centred) < 0.1 and wrong.samples == 8
    assert not TOLERANCES["int8"].passes(wrong)
    close = difference(ref, ref + rng.normal(scale=1e-3, size=ref.shape))
    assert close.cosine > 0.99999 and close.cosine_centred > 0.99999
    assert all(TOLERANCES[p].passes(close) for p in ("fp32", "fp16", "int8"))
    assert "centred cosine ≥0.98" in TOLERANCES["int8"].describe()
    assert TOLERANCES["int8"].to_dict()["min_cosine_centred"] == 0.98


def test_localize_judges_feature_maps_by_their_error_not_their_argmax():
    """A feature map with near-tied maxima whose argmax flips under a tiny error is within; a feature map with a
    large error is not; the model's output keeps top-1."""
    import numpy as np

    from inception_deploy.core.compare import difference
    from inception_deploy.core.tolerances import TOLERANCES
    from inception_deploy.parity.localize import rule

    rng = np.random.default_rng(0)
    ref = np.maximum(rng.normal(size=(2, 32, 7, 7)), 0)
    flat = ref.reshape(2, -1)
    flat[:, 10] = flat[:, 20] = flat.max() + 0.5  # two tied maxima in each sample
    act = ref + rng.normal(scale=1e-6, size=ref.shape)
    act.reshape(2, -1)[:, 10] = flat[:, 10] - 1e-6  # the argmax flips to the other maximum
    act.reshape(2, -1)[:, 20] = flat[:, 20] + 1e-6
    tied = difference(ref, act)
    assert tied.top1_agreement == 0.0 and tied.scaled < 1e-5  # a flipped argmax, a tiny error
    # the output keeps its top-1 rule, robust to near ties: this flip between tied maxima agrees, a real one does not
    assert tied.top1_agreement_robust == 1.0 and rule(TOLERANCES["int8"], "int8", output=True).passes(tied)
    real = act.copy()
    real.reshape(2, -1)[:, 0] = flat.max() + 5.0  # a class the reference ranks far lower becomes the top one
    assert not rule(TOLERANCES["int8"], "int8", output=True).passes(difference(ref, real))
    assert all(rule(TOLERANCES[p], p, output=False).passes(tied) for p in ("fp32", "fp16", "int8"))
    far = difference(ref, np.maximum(rng.normal(size=ref.shape), 0))
    assert not any(rule(TOLERANCES[p], p, output=False).passes(far) for p in ("fp32", "fp16", "int8"))


def test_localize_keeps_a_passing_int8_model_within_at_every_block(exported):
    """On a real Q/DQ model that passes, no block's feature map is reported as leaving tolerance; the classifier,
    whose output is the model's, is judged as the output."""
    import onnx

    from inception_deploy.core.manifest import read_manifest
    from inception_deploy.core.tolerances import TOLERANCES
    from inception_deploy.models.load import deployable_model, reference_weights
    from inception_deploy.models.registry import get_spec
    from inception_deploy.models.samples import random_batch
    from inception_deploy.parity.localize import localize

    out, _ = exported("googlenet")
    weights, classes = reference_weights(read_manifest(out), None, None)
    model = deployable_model("googlenet", weights=weights, num_classes=classes)
    x = random_batch(get_spec("googlenet"), 2, seed=0).numpy()
    blocks = localize(model, onnx.load(str(out / "model.int8.onnx")), x, tolerance=TOLERANCES["int8"],
                      precision="int8")
    assert [b.block for b in blocks if not b.within] == [], [b.to_dict() for b in blocks]
    assert [b.judged_as for b in blocks] == ["feature map"] * (len(blocks) - 1) + ["output"]
    assert blocks[-1].block == "fc (Linear)" and 0.98 <= blocks[-1].cosine_centred <= 1.0


def _parity_cli(out, *args):
    result = runner.invoke(app, ["parity", "v1", "--dir", str(out), "--precision", "fp32", "--samples", "2", *args])
    return result.exit_code, result.stdout.strip().splitlines()[-1]


def test_a_failing_atol_or_rtol_names_the_other_that_would_pass(exported):
    """--rtol alone: the FAIL line names the --atol that passes at that rtol; --atol alone: the --rtol. Both pass."""
    import re

    out, _ = exported("googlenet")
    code, line = _parity_cli(out, "--rtol", "1e-9")
    assert code == 1 and line.startswith("FAIL") and "with --rtol 1e-09, --atol " in line, line
    # and which element failed which bound: |actual - reference| = error > atol 0 + rtol x |reference| = bound
    worst = re.search(r", sample \d+, output \d+: \|\S+ - \S+\| = (\S+) > atol 0 \+ rtol 1e-09 x \|\S+\| = (\S+)\)",
                      line)
    assert worst and float(worst[1]) > float(worst[2]), line
    atol = re.search(r"--atol (\S+) would pass", line).group(1)
    assert float(atol) > 0
    assert _parity_cli(out, "--rtol", "1e-9", "--atol", atol) == (0, "PASS")
    code, line = _parity_cli(out, "--atol", "1e-9")
    assert code == 1 and "with --atol 1e-09, --rtol " in line, line
    rtol = re.search(r"--rtol (\S+) would pass", line).group(1)
    assert _parity_cli(out, "--atol", "1e-9", "--rtol", rtol) == (0, "PASS")


def test_compiled_torch_fp32_on_the_cpu_is_a_row_not_the_reference():
    from inception_deploy.parity.check import _targets
    from inception_deploy.runners import BACKENDS

    assert list(_targets(BACKENDS["torch"], [], ["fp32", "fp16"], "torch")) == [(None, "fp16")]
    assert list(_targets(BACKENDS["torch-compile"], [], ["fp32", "fp16"], "torch")) == [(None, "fp32"), (None, "fp16")]


def test_tables_print_whole_through_a_pipe(exported):
    """Where stdout is no terminal (`| cat`, `| tee`, a CI log), a table keeps its title and every column whole."""
    import os
    import subprocess
    import sys

    from conftest import CLI

    out, _ = exported("googlenet")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    result = subprocess.run([sys.executable, "-c", CLI, "parity", "v1", "--dir", str(out), "--precision", "fp32",
                             "--samples", "2"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "backend" in line)
    assert header.rstrip(" ┃│|").split()[-1] == "result", header  # the last column, not cut to "resu"
    assert all("…" not in line for line in lines), result.stdout  # no cell or title cut short


def test_report_is_a_directory_as_for_every_command(exported, tmp_path):
    """--report DIR: parity.md for people and parity.json for machines, as accuracy, bench and loadtest write theirs;
    a PATH.md, the former use, still names that one file."""
    out, _ = exported("googlenet")
    args = ["parity", "v1", "--dir", str(out), "--precision", "fp32", "--samples", "2", "--report"]
    result = runner.invoke(app, [*args, str(tmp_path / "reports")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "reports").iterdir()} == {"parity.md", "parity.json"}
    assert json.loads((tmp_path / "reports" / "parity.json").read_text())["passed"] is True
    result = runner.invoke(app, [*args, str(tmp_path / "one.md")])
    assert result.exit_code == 0 and (tmp_path / "one.md").is_file() and not (tmp_path / "one.json").exists()
