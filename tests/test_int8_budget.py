"""INT8 held to an accuracy budget on labelled images (export --eval), on the digits model: a googlenet whose head was
fitted on scikit-learn's digits, so that top-1 means something (tests/digits.py)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
import torch
from digits import folder_batch
from typer.testing import CliRunner

from inception_deploy.cli import app
from inception_deploy.core import manifest as manifests
from inception_deploy.core.compare import difference
from inception_deploy.core.errors import InputError
from inception_deploy.core.stats import mcnemar_exact, parse_max_drop, topk_hits, wilson
from inception_deploy.export.qdq_rules import qdq_violations
from inception_deploy.export.quantize import Int8Recipe, calibration_inputs, quantize_int8
from inception_deploy.models.load import create_model
from inception_deploy.models.registry import get_spec

runner = CliRunner()
EVAL_LIMIT = 100
MODULE = re.compile(r"^(conv\d|inception\d[a-e]\.branch\d(\.\d)?|fc)$")  # googlenet's blocks and modules


def _export(*args):
    result = runner.invoke(app, ["export", "googlenet", *map(str, args)])
    return result, result.stdout + result.stderr


FORMS = {"int8": "model.int8", "int8-cpu": "model.int8-cpu"}  # precision: its file's stem


def _int8(directory, precision="int8"):
    manifest = json.loads((directory / "manifest.json").read_text())
    return next(a for a in manifest["artifacts"] if a["path"] == f"{FORMS[precision]}.onnx")


@pytest.fixture(scope="module")
def budgeted(digits, tmp_path_factory):
    """The digits model exported with int8, in both forms, held to the default budget, calibration method auto."""
    out = tmp_path_factory.mktemp("budget") / "googlenet"
    result, text = _export("--weights", digits.checkpoint, "--int8", "--int8-form", "tensorrt,cpu", "--calib",
                           digits.calib, "--eval", digits.eval, "--eval-limit", EVAL_LIMIT, "--out", out)
    return out, result, text


@pytest.mark.parametrize("precision", FORMS)
def test_auto_calibration_keeps_the_best_method_and_measures_top1(budgeted, digits, precision):
    out, result, text = budgeted
    accuracy = _int8(out, precision)["accuracy"]
    assert result.exit_code == (0 if all(_int8(out, p)["accuracy"]["within_budget"] for p in FORMS) else 1), text
    assert set(accuracy["methods"]) == {"minmax", "entropy", "percentile"}
    best = max(f["top1"] for f in accuracy["methods"].values())
    assert accuracy["methods"][accuracy["chosen_method"]]["top1"] == best
    assert _int8(out, precision)["calibration"]["method"] == accuracy["chosen_method"]
    for method in ("minmax", "entropy", "percentile"):  # each method's cache, for the next run, one a form
        assert len(list(out.glob(f"{FORMS[precision]}.calib-{method}-*.json"))) == 1
    # fp32's top-1, computed here independently: the checkpoint in torch on the same first EVAL_LIMIT images
    # (round-robin over the classes, as --eval-limit takes them)
    model = create_model("googlenet", weights=digits.checkpoint)
    x, labels = folder_batch(get_spec("googlenet"), digits.eval)
    order = np.lexsort((labels, _ranks(labels)))[:EVAL_LIMIT]
    with torch.no_grad():
        hits = model(x[order]).argmax(1).numpy() == labels[order]
    reference = accuracy["reference"]
    assert reference["images"] == EVAL_LIMIT
    assert abs(reference["top1"] - hits.mean()) <= 1 / EVAL_LIMIT  # at most one near-tie flip between torch and ORT
    k = round(reference["top1"] * EVAL_LIMIT)
    assert reference["top1_interval"] == pytest.approx(list(wilson(k, EVAL_LIMIT)))
    # int8's drop, with its interval and the paired figures
    assert accuracy["drop_points"] == pytest.approx(100 * (reference["top1"] - accuracy["top1"]), abs=1e-3)
    low, high = accuracy["top1_interval"]
    assert low <= accuracy["top1"] <= high and high - low > 0.05  # 100 images: an interval of several points
    assert accuracy["mcnemar_p"] == pytest.approx(mcnemar_exact(accuracy["right_to_wrong"], accuracy["wrong_to_right"]))
    assert "--eval images (ORT CPU, 95 % Wilson)" in text and "calibration methods: minmax" in text
    assert f"fp32 {reference['top1']:.2%}" in " ".join(text.split()) and f", {precision} " in " ".join(text.split())


def _ranks(labels):
    seen, ranks = {}, []
    for label in labels.tolist():
        ranks.append(seen.get(label, 0))
        seen[label] = ranks[-1] + 1
    return np.asarray(ranks)


@pytest.fixture(scope="module")
def over_budget(digits, tmp_path_factory):
    """int8 calibrated on one grey image: its ranges fit nothing the eval images hold, top-1 collapses, the fall-back
    cannot mend it within its limit, and the best effort is written, marked over budget."""
    root = tmp_path_factory.mktemp("over")
    grey = root / "grey"
    grey.mkdir()
    from PIL import Image

    Image.new("RGB", (64, 64), (128, 128, 128)).save(grey / "grey.png")
    out = root / "export" / "googlenet"
    result, text = _export("--weights", digits.checkpoint, "--int8", "--int8-form", "tensorrt,cpu", "--calib", grey,
                           "--calib-method", "minmax", "--eval", digits.eval, "--eval-limit", 40, "--max-drop", "0.5",
                           "--fallback-limit", 2, "--out", out)
    return out, result, text


@pytest.mark.parametrize("precision", FORMS)
def test_over_budget_is_kept_marked_and_exits_1(over_budget, precision):
    out, result, text = over_budget
    assert result.exit_code == 1, text
    assert "OVER BUDGET" in result.stderr and "--accept-over-budget" in result.stderr
    assert f"OVER BUDGET: {FORMS[precision]}.onnx loses" in " ".join(result.stderr.split())
    accuracy = _int8(out, precision)["accuracy"]
    assert accuracy["within_budget"] is False and accuracy["drop_points"] > 0.5
    fallback = accuracy["fallback"]
    # the fall-back ran, in order: 1 node out, then 2 (the limit), each step measured, named by block and module
    assert [s["excluded"] for s in fallback["steps"]] == [0, 1, 2]
    assert fallback["steps"][2]["modules"][:1] == fallback["steps"][1]["modules"]
    ranked = [entry["module"] for entry in fallback["ranking"]]
    # every node's noise was found: its input activation's and its weights' SQNR, by name in qdq_loss_debug's results
    assert all(e["activation_sqnr_db"] is not None and e["weight_sqnr_db"] is not None for e in fallback["ranking"])
    assert all(MODULE.match(m) for m in ranked), ranked
    assert fallback["steps"][2]["modules"] == ranked[:2]
    assert all(0 <= s["top1"] <= 1 and len(s["top1_interval"]) == 2 for s in fallback["steps"])
    assert (out / f"{FORMS[precision]}.onnx").is_file()


def test_over_budget_int8_is_refused_downstream(over_budget, tmp_path):
    out, _, _ = over_budget
    for args in (["trt", "--int8", "--out", str(out)],
                 *(["triton", "googlenet", "--precision", precision, "--dir", str(out), "--kind", "cpu", "--repo",
                    str(tmp_path / "repo")] for precision in FORMS),
                 *(["serve", "googlenet", "--precision", precision, "--dir", str(out)] for precision in FORMS),
                 ["bench", "googlenet", "--backends", "onnxruntime", "--precision", "int8", "--batch", "1",
                  "--export-root", str(out.parent), "--duration-s", "0.2", "--warmup-s", "0.1", "--rounds", "1"],
                 ["bench", "googlenet", "--backends", "onnxruntime", "--precision", "int8-cpu", "--batch", "1",
                  "--export-root", str(out.parent), "--duration-s", "0.2", "--warmup-s", "0.1", "--rounds", "1"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        line = result.stderr.strip().splitlines()[-1]
        assert "over its accuracy budget" in line and "--accept-over-budget" in line, line
    assert not (tmp_path / "repo").exists()
    assert not list(out.glob("*.engine"))
    # accepted explicitly: the best-effort int8 builds with TensorRT-RTX, with a warning that says why it was used
    result = runner.invoke(app, ["trt", "--int8", "--out", str(out), "--accept-over-budget"])
    assert result.exit_code == 0, result.output
    assert "used because --accept-over-budget was passed" in result.stderr
    assert (out / "model.int8.rtx.engine").is_file()
    # the engine is over budget too: the refusal follows its source back to the int8 ONNX
    manifest = json.loads((out / "manifest.json").read_text())
    engine = next(a for a in manifest["artifacts"] if a["path"] == "model.int8.rtx.engine")
    assert engine["source"]["path"] == "model.int8.onnx" and "accuracy" not in engine
    assert manifests.over_budget(manifest, engine).startswith("model.int8.onnx is over its accuracy budget")
    with pytest.raises(InputError, match="--accept-over-budget"):
        manifests.check_budget(manifest, engine, accepted=False)
    # a bench row measured from it says so, in the record a machine reads
    result = runner.invoke(app, ["bench", "googlenet", "--backends", "onnxruntime", "--precision", "int8", "--batch",
                                 "1", "--export-root", str(out.parent), "--duration-s", "0.2", "--warmup-s", "0.1",
                                 "--rounds", "1", "--accept-over-budget", "--json", str(tmp_path / "bench.json")])
    assert result.exit_code == 0, result.output
    [record] = json.loads((tmp_path / "bench.json").read_text())["records"]
    assert record["status"] == "ok" and record["source"].startswith("model.int8.onnx sha256:")
    assert any("over its accuracy budget, measured with --accept-over-budget" in w for w in record["warnings"])


def test_every_fallback_step_builds_with_tensorrt_rtx(over_budget, digits, tmp_path):
    """The int8 ONNX of each fall-back step (the nodes out of int8 run in fp16) parses and compiles for real."""
    trt = pytest.importorskip("tensorrt_rtx")
    out, _, _ = over_budget
    fallback = _int8(out)["accuracy"]["fallback"]
    fp32 = onnx.load(str(out / "model.onnx"))
    calibration = calibration_inputs(get_spec("googlenet"), digits.calib, 4, synthetic=False)
    by_module = {entry["module"]: entry["node"] for entry in fallback["ranking"]}
    for step in fallback["steps"][1:]:
        excluded = [by_module[m] for m in step["modules"]]
        model, facts, _ = quantize_int8(fp32, calibration, Int8Recipe.of(), cache_dir=tmp_path, exclude=excluded)
        assert facts["calibration"]["quantized_nodes"] == len(fp32_quantizable(fp32)) - len(excluded)
        assert qdq_violations(model) == []  # the nodes left out are whole float nodes, not half-quantized ones
        convs = {n.name: n for n in model.graph.node if n.op_type in ("Conv", "Gemm")}
        producers = {o: n for n in model.graph.node for o in n.output}
        for name in excluded:  # its weight is a plain float initializer: not quantized
            weight = producers.get(convs[name].input[1])
            assert weight is None or weight.op_type != "DequantizeLinear", name
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
        parser = trt.OnnxParser(network, logger)
        assert parser.parse(model.SerializeToString()), [parser.get_error(i).desc() for i in range(parser.num_errors)]
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape("input", (1, 3, 224, 224), (1, 3, 224, 224), (2, 3, 224, 224))
        config.add_optimization_profile(profile)
        assert builder.build_serialized_network(network, config) is not None


def fp32_quantizable(model):
    from inception_deploy.export.quantize import quantization_nodes

    return quantization_nodes(model)


def test_without_eval_agreement_is_called_a_proxy(digits, tmp_path):
    result, text = _export("--weights", digits.checkpoint, "--int8", "--calib", digits.calib, "--calib-samples", 8,
                           "--out", tmp_path / "o")
    assert result.exit_code == 0, text
    parity = _int8(tmp_path / "o")["parity"]
    assert "proxy: no accuracy was measured" in parity["proxy"] and "accuracy" not in _int8(tmp_path / "o")
    assert parity["top1_agreement_robust"] >= parity["top1_agreement"]
    assert "proxy: no accuracy was measured" in " ".join(text.split())


@pytest.mark.parametrize("args, fragment", [
    (["--int8", "--calib-synthetic", "--calib-method", "auto"], "--calib-method auto keeps the method"),
    (["--max-drop", "1.0"], "add --int8"),
    (["--int8", "--calib-synthetic", "--max-drop", "1.0"], "--max-drop is measured on labelled images"),
    (["--int8", "--calib-synthetic", "--max-drop", "one"], "--max-drop must be a number"),
    (["--int8", "--calib-synthetic", "--max-drop", "150%"], "--max-drop must be a number"),
    (["--int8", "--calib-synthetic", "--fallback-limit", "3"], "apply to the eval images"),
    (["--int8", "--calib-method", "best", "--calib-synthetic"], "--calib-method must be one of"),
    (["--int8", "--calib", ".", "--eval", "."], "an untrained model (no --weights) has none to lose"),
    # the int8 forms' own options
    (["--int8-form", "cpu"], "add --int8"),
    (["--int8-reduce-range"], "add --int8"),
    (["--int8", "--calib-synthetic", "--int8-form", "gpu"], "--int8-form must be tensorrt, cpu or both"),
    (["--int8", "--calib-synthetic", "--int8-form", "cpu", "--int8-high-precision", "fp16"],
     "--int8-high-precision applies to the tensorrt form: add --int8-form tensorrt"),
    (["--int8", "--calib-synthetic", "--int8-reduce-range"], "--int8-reduce-range applies to the cpu form"),
    (["--int8", "--calib-synthetic", "--int8-high-precision", "fp8"], "fp8 does not apply to the tensorrt form"),
    (["--int8", "--calib-synthetic", "--opset", "21"], "ONNX Runtime cannot load TensorRT's int8 form at opset 21"),
])
def test_budget_arguments_are_checked_first(args, fragment, tmp_path):
    result = runner.invoke(app, ["export", "googlenet", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "o").exists()


def test_eval_labels_outside_the_head_are_refused_with_their_count(digits, tmp_path):
    tree = tmp_path / "eval"
    shutil.copytree(digits.eval, tree)
    (tree / "z_extra").mkdir()  # an eleventh class folder: index 10, outside a 10-class head
    shutil.copy(next((tree / "0").iterdir()), tree / "z_extra" / "a.png")
    shutil.copy(next((tree / "1").iterdir()), tree / "z_extra" / "b.png")
    result, text = _export("--weights", digits.checkpoint, "--int8", "--calib", digits.calib, "--eval", tree,
                           "--out", tmp_path / "o")
    assert result.exit_code == 2, text
    line = result.stderr.strip().splitlines()[-1]
    assert "2 image(s) of --eval" in line and "its head has 10 classes" in line, line
    assert not (tmp_path / "o").exists()


def test_statistics_against_hand_computed_values():
    assert mcnemar_exact(1, 9) == pytest.approx(0.021484375)  # 2 * (1 + 10) / 2**10
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == 1.0
    low, high = wilson(8, 10)  # Wilson 1927: 0.8 of 10 -> [0.4902, 0.9433]
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson(0, 20)[0] == 0.0 and wilson(20, 20)[1] == 1.0
    assert parse_max_drop("1%").allowed_points(0.8) == pytest.approx(0.8)
    assert parse_max_drop("0.5").allowed_points(0.8) == 0.5
    with pytest.raises(InputError):
        parse_max_drop("-1")
    logits = np.array([[3.0, 2.0, 1.0], [1.0, 1.0, 0.0]])
    assert topk_hits(logits, np.array([1, 0]), 1).tolist() == [False, False]  # row 1: a tie does not make a hit
    assert topk_hits(logits, np.array([1, 0]), 2).tolist() == [True, True]
    assert topk_hits(logits, np.array([1, 2]), 2).tolist() == [True, False]
    assert not topk_hits(np.array([[np.nan, np.nan, np.nan]]), np.array([0]), 1).any()


def test_agreement_counts_a_near_tie_flip_but_not_a_real_one():
    rng = np.random.default_rng(0)
    reference = np.tile(np.linspace(-4.0, 0.0, 50), (2, 1))  # 50 classes; the top one at 0.0
    reference[:, 48] = -0.005  # row by row, class 48 is near-tied with the top class 49
    noise = rng.normal(0, 0.01, reference.shape)
    near = reference + noise
    near[0, 48], near[0, 49] = 0.01, -0.01  # row 0 flips the near tie
    assert difference(reference, near).top1_agreement == 0.5
    assert difference(reference, near).top1_agreement_robust == 1.0  # a flip within the row's own noise
    far = reference + noise
    far[1, 10] = 1.0  # row 1 picks a class the reference ranks 3.2 lower: a real disagreement
    assert difference(reference, far).top1_agreement_robust == 0.5


def test_an_over_budget_mark_stays_with_its_bytes_through_a_re_export(over_budget, digits, tmp_path):
    """Re-exported without --eval, the same int8 bytes (same weights, calibration and recipe) keep the accuracy an
    earlier export measured of them, over-budget mark included: trt still refuses them without the flag."""
    grey = next(p for p in over_budget[0].parents if (p / "grey").is_dir()) / "grey"
    out = tmp_path / "googlenet"
    common = ("--weights", digits.checkpoint, "--int8", "--calib", grey, "--calib-method", "minmax", "--out", out)
    measured, text = _export(*common, "--eval", digits.eval, "--eval-limit", 40, "--max-drop", "0.5",
                             "--fallback-limit", 0)
    assert measured.exit_code == 1 and _int8(out)["accuracy"]["within_budget"] is False, text
    before = _int8(out)
    again, text = _export(*common)
    assert again.exit_code == 1 and "OVER BUDGET" in again.stderr, text  # said again, as it is again written
    after = _int8(out)
    assert after["sha256"] == before["sha256"]
    assert after["accuracy"]["within_budget"] is False and "same sha256" in after["accuracy"]["measured_by"]
    refused = runner.invoke(app, ["trt", "--int8", "--out", str(out)])
    assert refused.exit_code == 2 and "over its accuracy budget" in refused.stderr
