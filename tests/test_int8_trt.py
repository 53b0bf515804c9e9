"""INT8 with explicit Q/DQ (checked in ONNX Runtime), and the TensorRT path (run only where TensorRT is)."""

import importlib.util
import json
import random
import shutil
from pathlib import Path

import onnx
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from typer.testing import CliRunner

import inception_deploy as idp
from inception_deploy.cli import app

runner = CliRunner()
pytestmark = pytest.mark.slow
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    """scikit-learn's two sample photographs and seeded augmentations of them (crops, flips, brightness)."""
    import sklearn.datasets

    source = Path(sklearn.datasets.__file__).parent / "images"
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


def _every_conv_is_qdq(model: onnx.ModelProto) -> bool:
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    return bool(convs) and all(producer.get(n.input[0]) == producer.get(n.input[1]) == "DequantizeLinear" for n in convs)


@pytest.mark.parametrize("name", ["inception_v3", "googlenet"])
def test_int8_qdq_export_agrees_with_fp32(name, tmp_path, calib_dir, library_checkpoints):
    weights, _, _ = library_checkpoints(name)
    manifest = idp.export_onnx(name, weights=weights, int8=True, calib=calib_dir, out_dir=tmp_path)
    record = next(a for a in manifest["artifacts"] if a["precision"] == "int8")
    assert record["path"] == "model.int8.onnx" and record["calibration"]["samples"] == 24
    assert record["calibration"]["synthetic"] is False and record["calibration"]["cache_reused"] is False
    assert record["parity"]["cosine"] >= 0.98 and record["parity"]["passed"], record["parity"]
    model = onnx.load(str(tmp_path / "model.int8.onnx"))
    assert _every_conv_is_qdq(model)
    assert (tmp_path / record["calibration"]["cache"]).is_file()

    # parity on the real photographs, through the variant's preprocessing, judged by agreement
    report = idp.check_parity(name, export_dir=tmp_path, precisions="int8", images=calib_dir, samples=0)
    [row] = report.rows
    assert row.precision == "int8" and row.passed and row.diff.cosine >= 0.98, row.to_dict()


def test_calibration_cache_is_reused_and_synthetic_is_labelled(tmp_path, calib_dir, library_checkpoints):
    weights, _, _ = library_checkpoints("googlenet")
    first = idp.export_onnx("v1", weights=weights, int8=True, calib=calib_dir, calib_samples=8, out_dir=tmp_path)
    second = idp.export_onnx("v1", weights=weights, int8=True, calib=calib_dir, calib_samples=8, out_dir=tmp_path)
    one, two = (next(a for a in m["artifacts"] if a["precision"] == "int8") for m in (first, second))
    assert not one["calibration"]["cache_reused"] and two["calibration"]["cache_reused"]
    assert one["calibration"]["cache"] == two["calibration"]["cache"] and one["sha256"] == two["sha256"]
    assert len(list(tmp_path.glob("model.int8.calib-*.json"))) == 1

    result = runner.invoke(app, ["export", "v1", "--weights", str(weights), "--int8", "--calib-synthetic",
                                 "--calib-samples", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC" in result.stdout and "calibrated on SYNTHETIC inputs" in result.stderr
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    calibration = next(a for a in manifest["artifacts"] if a["precision"] == "int8")["calibration"]
    assert calibration["synthetic"] is True and "SYNTHETIC" in calibration["source"]


def test_int8_arguments_are_checked_before_work(tmp_path):
    for args, fragment in [
        (["--int8"], "--int8 needs calibration images"),
        (["--calib", str(tmp_path)], "add --int8"),
        (["--int8", "--calib", str(tmp_path / "none")], "is not a directory"),
        (["--int8", "--calib", str(tmp_path)], "holds no readable image"),
        (["--int8", "--calib-synthetic", "--calib-method", "magic"], "--calib-method must be one of"),
    ]:
        result = runner.invoke(app, ["export", "v1", "--out", str(tmp_path / "o"), *args])
        assert result.exit_code == 2, result.output
        assert fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(HAS_TENSORRT and torch.cuda.is_available(), reason="TensorRT and a GPU are here: the missing path cannot be shown")
def test_trt_without_tensorrt_or_gpu_exits_3(tmp_path):
    for args in (["trt", "--fp16"], ["trt", "v3", "--int8"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 3, result.output
        assert "pip install 'inception-deploy[tensorrt]'" in result.stderr or "CUDA GPU" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["parity", "v3", "--backends", "tensorrt"])
    assert result.exit_code == 3 and "TensorRT" in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TENSORRT and torch.cuda.is_available()), reason="needs `import tensorrt` and a CUDA GPU; TensorRT cannot be installed in this workplace")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_build_and_parity(precision, tmp_path, calib_dir, library_checkpoints):
    from inception_deploy.engine import BuildOptions, build_engine

    weights, _, _ = library_checkpoints("googlenet")
    idp.export_onnx("v1", weights=weights, fp16=True, int8=True, calib=calib_dir, out_dir=tmp_path)
    manifest = build_engine(tmp_path, BuildOptions(precision=precision, opt_batch=8, max_batch=32))
    engine = manifest["artifacts"][-1]
    assert engine["kind"] == "tensorrt-engine" and (tmp_path / engine["path"]).is_file()
    report = idp.check_parity("v1", export_dir=tmp_path, backends="tensorrt", precisions=precision, images=calib_dir)
    assert report.passed, report.to_dict()
