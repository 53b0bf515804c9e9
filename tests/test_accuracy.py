"""accuracy: top-1/top-5 of every artifact of the digits googlenet (a model with real decisions) against fp32 PyTorch
on the same images, checked against figures computed here by hand, and its refusals."""

import json
import math
import os
import shutil
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from digits import folder_batch
from typer.testing import CliRunner

from inception_deploy.accuracy.evaluate import paired_drop_interval
from inception_deploy.cli import app
from inception_deploy.core.stats import mcnemar_exact, wilson
from inception_deploy.models.load import create_model

runner = CliRunner()
pytestmark = pytest.mark.slow

PER_CLASS = 4  # images of each digit in the shared subset: 40 in all, every figure below is on these
Z = 1.959963984540054


@pytest.fixture(scope="module")
def export(digits, tmp_path_factory):
    """The digits model exported once: fp32, fp16, and int8 in both forms calibrated on digits.calib."""
    out = tmp_path_factory.mktemp("acc") / "export"
    result = runner.invoke(app, ["export", "googlenet", "--weights", str(digits.checkpoint), "--num-classes", "10",
                                 "--fp16", "--int8", "--int8-form", "tensorrt,cpu", "--calib", str(digits.calib),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def subset(digits, tmp_path_factory):
    """The first PER_CLASS eval images of each digit, as an ImageFolder tree and as a flat folder with a CSV whose rows
    follow the tree's order (same batches, so the figures must match exactly)."""
    root = tmp_path_factory.mktemp("subset")
    tree, flat = root / "tree", root / "flat"
    flat.mkdir()
    rows = ["file,class"]
    for folder in sorted(p for p in digits.eval.iterdir() if p.is_dir()):
        (tree / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:PER_CLASS]:
            shutil.copy(image, tree / folder.name / image.name)
            shutil.copy(image, flat / f"d{folder.name}_{image.name}")
            rows.append(f"d{folder.name}_{image.name},{folder.name}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return tree, flat, root / "labels.csv"


def _accuracy(*args):
    result = runner.invoke(app, ["accuracy", "googlenet", *map(str, args), "--json", "-"])
    return result, (json.loads(result.stdout) if result.exit_code in (0, 1) else None)


@pytest.fixture(scope="module")
def full(export, subset, tmp_path_factory):
    """Every artifact (the default precisions) on the subset, with --json - and --report."""
    tree, _, _ = subset
    report_dir = tmp_path_factory.mktemp("report") / "accuracy"
    result, report = _accuracy("--data", tree, "--dir", export, "--report", report_dir)
    assert result.exit_code in (0, 1), result.output
    return result, report, report_dir


def _row(report, backend, precision):
    return next(r for r in report["rows"] if r["backend"] == backend and r["precision"] == precision)


def _hand_wilson(hits, n):
    p = hits / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return centre - half, centre + half


def test_top1_matches_an_independent_computation(full, subset, digits, export):
    """The reference row's and the ONNX Runtime fp32 row's top-1 and top-5, recomputed here: the checkpoint in
    PyTorch, model.onnx in a plain ONNX Runtime session, on the same preprocessed images."""
    _, report, _ = full
    tree, _, _ = subset
    model = create_model("googlenet", weights=digits.checkpoint)
    x, labels = folder_batch(model.spec, tree)
    with torch.no_grad():
        torch_logits = model(x).numpy()
    session = onnxruntime.InferenceSession(str(export / "model.onnx"), providers=["CPUExecutionProvider"])
    ort_logits = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    n = len(labels)
    assert n == 10 * PER_CLASS

    reference = report["rows"][0]
    assert (reference["backend"], reference["device"], reference["precision"], reference["reference"]) == \
        ("torch", "cpu", "fp32", True)
    assert reference["images"] == n
    assert reference["top1_hits"] == int((torch_logits.argmax(1) == labels).sum())
    assert reference["top1"] == pytest.approx((torch_logits.argmax(1) == labels).mean())
    top5 = np.argsort(-torch_logits, axis=1)[:, :5]
    assert reference["top5_hits"] == int((top5 == labels[:, None]).any(1).sum())

    fp32 = _row(report, "onnxruntime", "fp32")
    ort_right = ort_logits.argmax(1) == labels
    assert fp32["artifact"] == "model.onnx" and fp32["images"] == n
    assert fp32["top1_hits"] == int(ort_right.sum())
    torch_right = torch_logits.argmax(1) == labels
    assert fp32["right_to_wrong"] == int((torch_right & ~ort_right).sum())
    assert fp32["wrong_to_right"] == int((~torch_right & ort_right).sum())
    assert reference["top1"] > 0.5  # a trained model: far above the 10 % of chance


def test_the_json_is_flat_rows_with_units_and_every_interval(full):
    result, report, report_dir = full
    assert set(report["units"]) >= {"top1", "top5", "drop_points", "images_per_s"}
    assert [r["precision"] for r in report["rows"]] == ["fp32", "fp32", "fp16", "int8", "int8-cpu"]
    assert report["max_drop"] == {"value": 1.0, "relative": False, "describe": "1 point(s) of top-1"}
    for row in report["rows"]:
        assert all(not isinstance(v, (dict, list)) for v in row.values()), row  # flat
        n = row["images"]
        for k in ("top1", "top5"):
            assert 0 <= row[f"{k}_ci95_low"] <= row[k] <= row[f"{k}_ci95_high"] <= 1
            low, high = _hand_wilson(row[f"{k}_hits"], n)
            assert row[f"{k}_ci95_low"] == pytest.approx(max(0.0, low), abs=1e-12)
            assert row[f"{k}_ci95_high"] == pytest.approx(min(1.0, high), abs=1e-12)
        assert row["images_per_s"] > 0 and row["timed_images"] == n - 32  # batch 32: the first one is the warm-up
    reference = report["rows"][0]
    for row in report["rows"][1:]:
        drop = 100 * (row["right_to_wrong"] - row["wrong_to_right"]) / row["images"]
        assert row["drop_points"] == pytest.approx(drop)
        assert row["drop_points"] == pytest.approx(100 * (reference["top1"] - row["top1"]))
        assert row["drop_ci95_low_points"] <= row["drop_points"] <= row["drop_ci95_high_points"]
        assert row["allowed_drop_points"] == 1.0
        assert row["passed"] == (row["drop_points"] <= 1.0)
        assert row["mcnemar_p"] == pytest.approx(mcnemar_exact(row["right_to_wrong"], row["wrong_to_right"]))
    for precision, artifact in (("int8", "model.int8.onnx"), ("int8-cpu", "model.int8-cpu.onnx")):
        int8 = _row(report, "onnxruntime", precision)
        assert int8["artifact"] == artifact
        assert int8["drop_ci95_high_points"] - int8["drop_ci95_low_points"] > 0  # an interval, never a bare point
    assert report["passed"] == all(r["passed"] for r in report["rows"][1:])
    assert result.exit_code == (0 if report["passed"] else 1)
    assert json.loads((report_dir / "accuracy.json").read_text()) == report
    markdown = (report_dir / "accuracy.md").read_text()
    assert "model.int8.onnx" in markdown and "Wilson" in markdown and "McNemar" in markdown
    verdict = result.stderr.strip().splitlines()[-1]  # stdout carries the JSON alone: the verdict goes to stderr
    assert verdict.startswith("PASS" if report["passed"] else "FAIL"), result.stderr
    print("\naccuracy of the digits googlenet on", reference["images"], "eval images:")
    for row in report["rows"]:
        print(f"  {row['backend']} {row['precision']}: top-1 {row['top1']:.3f} [{row['top1_ci95_low']:.3f}, "
              f"{row['top1_ci95_high']:.3f}], drop {row.get('drop_points', 0):+.2f} points "
              f"[{row.get('drop_ci95_low_points', 0):+.2f}, {row.get('drop_ci95_high_points', 0):+.2f}]")


def test_wilson_against_hand_computed_intervals():
    # 8/10: p = 0.8, centre = (0.8 + 0.19207) / 1.38415 = 0.71679, half = 0.22653
    assert wilson(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    # 0/10: [0, z² / (n + z²)] = [0, 3.84146 / 13.84146]
    assert wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)


def test_mcnemar_against_hand_computed_p_values():
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 2 * 11 / 1024
    assert mcnemar_exact(1, 9) == pytest.approx(0.021484375, rel=1e-12)  # summed in log space: to rounding
    assert mcnemar_exact(9, 1) == pytest.approx(0.021484375, rel=1e-12)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_the_drop_interval_against_a_hand_computed_case():
    # b=3 right→wrong, c=1 wrong→right of n=10; Agresti-Min adds 1/2 to each cell: b'=3.5/12, c'=1.5/12,
    # d = 1/6, se = sqrt((5/12 - 1/36) / 12) = 0.180021; 1.959964 * se = 0.352835
    assert paired_drop_interval(3, 1, 10) == pytest.approx((-18.6167, 51.9501), abs=1e-3)
    low, high = paired_drop_interval(0, 0, 200)  # no flip: still an interval, symmetric about 0
    assert low == pytest.approx(-high) and high > 0


def test_a_csv_flat_folder_gives_the_figures_of_the_imagefolder(full, subset, export):
    _, tree_report, _ = full
    _, flat, labels = subset
    result, report = _accuracy("--data", flat, "--labels", labels, "--dir", export, "--precision",
                               "fp32,int8,int8-cpu")
    assert result.exit_code in (0, 1), result.output
    assert report["data"]["layout"] == "csv" and report["data"]["evaluated"] == 10 * PER_CLASS
    figures = ("images", "top1_hits", "top5_hits", "top1", "top1_ci95_low", "top1_ci95_high", "right_to_wrong",
               "wrong_to_right", "drop_points", "drop_ci95_low_points", "drop_ci95_high_points", "mcnemar_p")
    assert [(r["backend"], r["precision"]) for r in report["rows"]] == \
        [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("onnxruntime", "int8-cpu")]
    for row in report["rows"]:
        twin = _row(tree_report, row["backend"], row["precision"])
        assert {k: row.get(k) for k in figures} == {k: twin.get(k) for k in figures}, row["precision"]


def _one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_labels_outside_the_head_are_refused_with_their_count(subset, export, tmp_path):
    _, flat, labels = subset
    rows = labels.read_text().splitlines()
    bad = tmp_path / "labels.csv"
    bad.write_text("\n".join(rows[:5] + [f"{rows[5].split(',')[0]},10", f"{rows[6].split(',')[0]},12",
                                         f"{rows[7].split(',')[0]},10"]) + "\n")
    result = runner.invoke(app, ["accuracy", "googlenet", "--data", str(flat), "--labels", str(bad), "--dir",
                                 str(export)])
    _one_line_error(result, 2, "3 image(s)", "up to 12", "its head has 10 classes")


def test_an_unreadable_image_is_listed_and_skipped(digits, export, tmp_path):
    tree = tmp_path / "tree"
    for folder in sorted(p for p in digits.eval.iterdir() if p.is_dir())[:3]:
        (tree / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:2]:
            shutil.copy(image, tree / folder.name / image.name)
    (tree / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    result, report = _accuracy("--data", tree, "--dir", export, "--precision", "fp32", "--max-drop", "100",
                               "--batch", "3")
    assert result.exit_code == 0, result.output
    assert report["data"]["images"] == 7 and report["data"]["evaluated"] == 6 and report["data"]["skipped"] == 1
    assert [s["file"] for s in report["skipped_images"]] == ["1/broken.png"]
    assert all(r["images"] == 6 for r in report["rows"])
    # batches of 3 files: [0, 0, broken] -> 2 images, [1, 1, 2], [2]: throughput times the one full batch after the
    # first (the first is the warm-up; the others are other shapes)
    assert all(r["timed_images"] == 3 for r in report["rows"]), report["rows"]
    assert "skipped image 1/broken.png" in result.stderr, result.stderr
    # 3 class folders for a 10-class head: read as classes 0..2 (right here), said, since a subset often is not
    [warning] = [w for w in report["warnings"] if "class folder" in w]
    assert "has 3 class folder(s) for a head of 10 classes" in warning and "--labels FILE" in warning


@pytest.fixture(scope="module")
def wrong_export(digits, tmp_path_factory):
    """An export whose head is shifted by one class (class k's weights answer for k+1): nearly every top-1 is wrong,
    whatever the numerics; the reference stays the trained checkpoint (--weights)."""
    root = tmp_path_factory.mktemp("wrong")
    state = torch.load(digits.checkpoint, weights_only=True)
    state["fc.weight"] = torch.roll(state["fc.weight"], 1, dims=0)
    state["fc.bias"] = torch.roll(state["fc.bias"], 1, dims=0)
    torch.save(state, root / "shifted.pth")
    result = runner.invoke(app, ["export", "googlenet", "--weights", str(root / "shifted.pth"), "--out",
                                 str(root / "export")])
    assert result.exit_code == 0, result.output
    return root / "export"


@pytest.fixture(scope="module")
def grey_int8(digits, tmp_path_factory):
    """The trained checkpoint's export, int8 calibrated on one grey image: its activation ranges fit nothing the
    digits hold, and top-1 falls far below the reference's, the same checkpoint in fp32."""
    from PIL import Image

    root = tmp_path_factory.mktemp("grey")
    (root / "grey").mkdir()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(root / "grey" / "grey.png")
    result = runner.invoke(app, ["export", "googlenet", "--weights", str(digits.checkpoint), "--int8", "--calib",
                                 str(root / "grey"), "--calib-samples", "1", "--out", str(root / "export")])
    assert result.exit_code == 0, result.output
    return root / "export"


@pytest.mark.parametrize("max_drop, passes", [("50%", False), ("100%", True)])
def test_max_drop_relative_to_the_reference_top1(grey_int8, subset, max_drop, passes):
    tree, _, _ = subset
    result, report = _accuracy("--data", tree, "--dir", grey_int8, "--precision", "int8", "--limit", "20",
                               "--max-drop", max_drop)
    assert result.exit_code == (0 if passes else 1), result.output
    reference, [row] = report["rows"][0], report["rows"][1:]
    assert report["max_drop"]["relative"] is True
    # "50%" allows half of the reference's top-1 (in points); "100%" all of it, which no drop can exceed
    assert row["allowed_drop_points"] == pytest.approx(float(max_drop[:-1]) * reference["top1"])
    assert reference["top1"] > 0.5 and row["drop_points"] > 0.5 * 100 * reference["top1"]
    assert row["passed"] is passes and report["passed"] is passes
    if not passes:
        assert "FAIL: onnxruntime model.int8.onnx (int8) drops" in result.stderr


def test_weights_other_than_the_exports_are_refused_before_any_work(wrong_export, digits, subset):
    """--weights that are not the checkpoint the export was made from: the drop would compare two models."""
    tree, _, _ = subset
    result = runner.invoke(app, ["accuracy", "googlenet", "--data", str(tree), "--dir", str(wrong_export),
                                 "--weights", str(digits.checkpoint)])
    _one_line_error(result, 2, "is not the checkpoint this export was made from", "two different models")


def test_a_missing_backend_exits_3_before_any_work(export, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # what `import tensorrt` meets when it is absent
    result = runner.invoke(app, ["accuracy", "googlenet", "--data", str(tmp_path / "nowhere"), "--dir", str(export),
                                 "--backends", "onnxruntime,tensorrt"])
    _one_line_error(result, 3, "TensorRT is not installed")  # before --data is even looked at


def test_an_untrained_model_is_said_loudly(export, subset, tmp_path):
    """The export's manifest without its weights: the reference is the seeded init, whose accuracy is chance."""
    copy = tmp_path / "untrained"
    copy.mkdir()
    for path in export.iterdir():
        if path.name != "manifest.json":
            os.link(path, copy / path.name)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["weights"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    tree, _, _ = subset
    result, report = _accuracy("--data", tree, "--dir", copy, "--precision", "fp32", "--limit", "10")
    assert report["untrained"] is True and report["passed"] is False and "untrained" in report["no_verdict"]
    assert "UNTRAINED" in result.stderr and "meaningless" in result.stderr
    assert result.exit_code == 1 and "FAIL: no verdict: the reference is an untrained model" in result.stderr


def test_a_tampered_artifact_is_refused_before_it_runs(export, subset, tmp_path):
    copy = tmp_path / "tampered"
    copy.mkdir()
    for path in export.iterdir():
        shutil.copy(path, copy / path.name)
    with open(copy / "model.fp16.onnx", "ab") as f:
        f.write(b"\0")
    tree, _, _ = subset
    result = runner.invoke(app, ["accuracy", "googlenet", "--data", str(tree), "--dir", str(copy), "--precision",
                                 "fp16"])
    _one_line_error(result, 2, "model.fp16.onnx changed since it was exported")


def test_a_reference_no_better_than_its_most_common_label_is_said(wrong_export, subset):
    """The shifted head as the reference itself (its manifest's checkpoint): nearly every top-1 is wrong."""
    tree, _, _ = subset
    result, report = _accuracy("--data", tree, "--dir", wrong_export, "--limit", "20", "--max-drop", "100")
    assert result.exit_code == 1, result.output  # never PASS on a comparison the tool itself calls meaningless
    assert report["rows"][0]["top1"] <= 0.1 and report["passed"] is False
    assert any(w.startswith("the reference's top-1") and "most common label" in w for w in report["warnings"])
    assert "FAIL: no verdict: the reference's top-1" in " ".join(result.stderr.split())


def test_requests_that_compare_nothing_or_make_no_sense_exit_2_before_any_work(export, subset):
    tree, _, _ = subset
    for args, fragments in (
        (["--backends", "torch", "--precision", "fp32"], ["nothing to compare with the reference (torch-cpu-fp32)",
                                                          "the reference itself"]),
        (["--backends", "torch", "--precision", "int8"], ["nothing to compare", "torch runs no int8"]),
        (["--backends", "torch,onnxruntime-cuda", "--precision", "fp16,int8-cpu"],
         ["nothing to compare with the reference (torch-cpu-fp32) in int8-cpu", "int8-cpu is ONNX Runtime's CPU form"]),
        (["--num-classes", "0"], ["--num-classes must be at least 1, got 0"]),
        (["--json", ""], ["--json needs a PATH"]),
        (["--max-drop", "5%%"], ["--max-drop must be", "0% to 100%", "got '5%%'"]),
    ):
        result = runner.invoke(app, ["accuracy", "googlenet", "--data", str(tree), "--dir", str(export), *args])
        _one_line_error(result, 2, *fragments)  # the one line: no progress, no image evaluated
