"""A catalogue of bad and adversarial inputs, tried as a new user would.

Every case must end in one line on stderr with the documented exit code (2 usage/input, 1 failed check,
3 missing backend), no traceback, nothing left behind (no new or partial file), and every earlier artifact
byte-identical. Ctrl-C is tried with a real SIGINT sent to a real process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLI, run_and_interrupt
from typer.testing import CliRunner

from inception_deploy.cli import app

runner = CliRunner()
PROC = Path("/proc/no-such-dir")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with its sha256, and every directory: what must not change."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "<dir>"
            for p in sorted(root.rglob("*"))}


class Workspace:
    """A scratch directory with an export of googlenet (fp32, fp16, int8) in export/googlenet."""

    def __init__(self, root: Path, export_copy):
        self.root = root
        self._export_copy = export_copy
        self._export: Path | None = None

    @property
    def export(self) -> Path:
        if self._export is None:
            source = self._export_copy("googlenet")
            self._export = self.root / "export" / "googlenet"
            self._export.parent.mkdir(exist_ok=True)
            shutil.copytree(source, self._export)  # real copies: cases replace files in place
        return self._export

    def file(self, name: str, data: bytes = b"") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def swap(self, name: str, other: str) -> Path:
        """Replace an artifact with another file's bytes: what a tampered or swapped artifact looks like."""
        target = self.export / name
        target.write_bytes((self.export / other).read_bytes())
        return target

    def manifest(self, text: str) -> Path:
        (self.export / "manifest.json").write_text(text)
        return self.export

    def checkpoint(
        self, name: str, variant: str = "googlenet", *, poison: bool = False, safetensors: bool = False
    ) -> Path:
        from inception_deploy.models import create_model

        state = {k: v.clone() for k, v in create_model(variant).state_dict().items()}
        if poison:
            next(v for v in state.values() if v.is_floating_point()).view(-1)[0] = float("nan")
        path = self.root / name
        if safetensors:
            from safetensors.torch import save_file

            save_file(state, str(path))
        else:
            torch.save(state, path)
        return path


def pickled_object(ws: Workspace) -> Path:
    path = ws.root / "evil.pth"
    torch.save({"model": torch.nn.Linear(2, 2)}, path)  # a pickled module, not a state dict
    return path


def suite_with_typo(ws: Workspace) -> Path:
    return ws.file("typo.toml", b'variants = ["v1"]\nbackend = ["torch"]\n')


# (id, args built from the workspace, exit code, fragment of the one-line message)
CASES = [
    # unknown names and bad options
    ("export-unknown-variant", lambda ws: ["export", "v9"], 2, "unknown variant 'v9'"),
    ("parity-unknown-variant", lambda ws: ["parity", "v9"], 2, "unknown variant 'v9'"),
    ("bench-unknown-variant", lambda ws: ["bench", "v9"], 2, "unknown variant 'v9'"),
    ("trt-unknown-variant", lambda ws: ["trt", "v9", "--compiler", "tensorrt"], 2, "unknown variant 'v9'"),
    ("export-bad-opset", lambda ws: ["export", "v1", "--opset", "3"], 2, "--opset must be between"),
    ("export-batch-zero", lambda ws: ["export", "v1", "--batch", "0"], 2, "--batch must be"),
    ("export-batch-word", lambda ws: ["export", "v1", "--batch", "lots"], 2, "--batch must be"),
    ("export-fp16-io-alone", lambda ws: ["export", "v1", "--fp16-io"], 2, "add --fp16"),
    ("export-dir-and-former-out", lambda ws: ["export", "v1", "--dir", str(ws.root / "a"), "--out", str(ws.root / "b")],
     2, "--out is the former name of --dir: give --dir once"),
    ("export-calib-without-int8", lambda ws: ["export", "v1", "--calib", str(ws.folder("imgs"))], 2, "add --int8"),
    ("export-int8-without-calib", lambda ws: ["export", "v1", "--int8"], 2, "--calib DIR"),
    (
        "export-int8-empty-calib",
        lambda ws: ["export", "v1", "--int8", "--calib", str(ws.folder("empty"))],
        2,
        "--calib",
    ),
    (
        "export-int8-calib-not-a-dir",
        lambda ws: ["export", "v1", "--int8", "--calib", str(ws.file("x.jpg", b"x"))],
        2,
        "--calib",
    ),
    (
        "export-int8-calib-only-junk",
        lambda ws: ["export", "v1", "--int8", "--calib", str(ws.file("junk/a.jpg", b"no image").parent)],
        2,
        "a.jpg",
    ),
    # checkpoints
    ("weights-missing", lambda ws: ["export", "v1", "--weights", str(ws.root / "nope.pth")], 2, "does not exist"),
    ("weights-a-directory", lambda ws: ["export", "v1", "--weights", str(ws.folder("ckpt"))], 2, "not a file"),
    (
        "weights-garbage",
        lambda ws: ["export", "v1", "--weights", str(ws.file("g.pth", os.urandom(4096)))],
        2,
        "corrupt or truncated",
    ),
    (
        "weights-truncated-safetensors",
        lambda ws: [
            "export",
            "v1",
            "--weights",
            str(ws.file("t.safetensors", b'\x10\x00\x00\x00\x00\x00\x00\x00{"a"')),
        ],
        2,
        "corrupt or truncated",
    ),
    (
        "weights-pickled-object",
        lambda ws: ["export", "v1", "--weights", str(pickled_object(ws))],
        2,
        "pickled Python objects",
    ),
    (
        "weights-other-architecture",
        lambda ws: ["export", "v3", "--weights", str(ws.checkpoint("v1.pth"))],
        2,
        "googlenet",
    ),
    (
        "weights-with-nan",
        lambda ws: ["export", "v1", "--weights", str(ws.checkpoint("nan.pth", poison=True))],
        2,
        "holds NaN",
    ),
    # output paths, refused before any work
    ("export-out-is-a-file", lambda ws: ["export", "v1", "--out", str(ws.file("taken"))], 2, "is a file"),
    ("export-out-under-a-file", lambda ws: ["export", "v1", "--out", str(ws.file("plain") / "sub")], 2, "is a file"),
    ("export-out-in-proc", lambda ws: ["export", "v1", "--out", str(PROC / "x")], 2, "not writable"),
    ("export-over-another-variant", lambda ws: ["export", "v3", "--out", str(ws.export)], 2, "--force"),
    ("bench-json-is-a-dir", lambda ws: ["bench", "v1", "--json", str(ws.folder("out"))], 2, "is a directory"),
    ("bench-csv-in-proc", lambda ws: ["bench", "v1", "--csv", str(PROC / "b.csv")], 2, "not writable"),
    ("bench-report-is-a-file", lambda ws: ["bench", "v1", "--report", str(ws.file("r"))], 2, "is a file"),
    (
        "parity-json-is-a-dir",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--json", str(ws.folder("o"))],
        2,
        "is a directory",
    ),
    (
        "parity-report-in-proc",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--report", str(PROC / "r.md")],
        2,
        "not writable",
    ),
    ("bench-json-is-a-device", lambda ws: ["bench", "v1", "--json", "/dev/null"], 2, "not a regular file"),
    # integrity: a tampered artifact is never used
    (
        "parity-swapped-onnx",
        lambda ws: ["parity", "v1", "--dir", str(ws.swap("model.onnx", "model.fp16.onnx").parent)],
        2,
        "changed since it was exported",
    ),
    (
        "bench-swapped-onnx",
        lambda ws: [
            "bench",
            "v1",
            "--backends",
            "onnxruntime",
            "--batch",
            "1",
            "--export-root",
            str(ws.swap("model.onnx", "model.int8.onnx").parent.parent),
        ],
        2,
        "changed since",
    ),
    (
        "bench-unlisted-onnx",
        lambda ws: [
            "bench",
            "v1",
            "--backends",
            "onnxruntime",
            "--batch",
            "1",
            "--export-root",
            str(ws.manifest('{"variant": "googlenet", "artifacts": []}').parent),
        ],
        2,
        "is not listed in",
    ),
    (
        "parity-unlisted-onnx",
        lambda ws: [
            "parity",
            "v1",
            "--onnx",
            str(ws.file("export/googlenet/extra.onnx", (ws.export / "model.onnx").read_bytes())),
        ],
        2,
        "is not listed in",
    ),
    (
        "trt-swapped-onnx",
        lambda ws: ["trt", "v1", "--out", str(ws.swap("model.fp16.onnx", "model.onnx").parent)],
        2,
        "changed since it was exported",
    ),
    ("parity-empty-manifest", lambda ws: ["parity", "v1", "--dir", str(ws.manifest(""))], 2, "is empty (0 bytes)"),
    (
        "parity-truncated-manifest",
        lambda ws: ["parity", "v1", "--dir", str(ws.manifest('{"variant": "googlenet", "artif'))],
        2,
        "is not valid JSON",
    ),
    (
        "parity-foreign-manifest",
        lambda ws: ["parity", "v1", "--dir", str(ws.manifest('{"name": "something else"}'))],
        2,
        "not an inception-deploy manifest",
    ),
    ("trt-invalid-manifest", lambda ws: ["trt", "v1", "--out", str(ws.manifest("[1, 2"))], 2, "is not valid JSON"),
    (
        "bench-invalid-manifest",
        lambda ws: ["bench", "v1", "--batch", "1", "--export-root", str(ws.manifest("{}").parent)],
        2,
        "not an inception-deploy manifest",
    ),
    (
        "parity-empty-onnx",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--onnx", str(ws.file("empty.onnx"))],
        2,
        "is empty (0 bytes)",
    ),
    (
        "parity-truncated-onnx",
        lambda ws: ["parity", "v1", "--onnx", str(ws.file("t.onnx", (ws.export / "model.onnx").read_bytes()[:5000]))],
        2,
        "not a readable ONNX model",
    ),
    (
        "parity-onnx-of-another-variant",
        lambda ws: ["parity", "v3", "--onnx", str(ws.export / "model.onnx")],
        2,
        "looks like googlenet",
    ),
    # parity options
    (
        "parity-negative-atol",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--atol", "-1"],
        2,
        "--atol must be a finite number at least 0, not -1.0",
    ),
    ("parity-infinite-atol", lambda ws: ["parity", "v1", "--dir", str(ws.export), "--atol", "inf"], 2,
     "--atol must be a finite number at least 0, not inf"),
    (
        "parity-negative-rtol",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--rtol", "-0.5"],
        2,
        "--rtol must be a finite number at least 0, not -0.5",
    ),
    # every number option is finite and in range, by one check (core.errors.check_number)
    ("bench-nan-duration", lambda ws: ["bench", "v1", "--duration-s", "nan"], 2,
     "--duration-s must be a finite number more than 0, not nan"),
    ("bench-infinite-warmup", lambda ws: ["bench", "v1", "--warmup-s", "inf"], 2,
     "--warmup-s must be a finite number at least 0, not inf"),
    ("loadtest-infinite-duration", lambda ws: ["loadtest", "http://127.0.0.1:9", "--model", "m", "--duration-s", "inf"],
     2, "--duration-s must be a finite number more than 0 and at most 86400, not inf"),
    ("loadtest-nan-duration", lambda ws: ["loadtest", "http://127.0.0.1:9", "--model", "m", "--duration-s", "nan"], 2,
     "--duration-s must be a finite number more than 0 and at most 86400, not nan"),
    # a server URL: its scheme honoured or refused, no path
    ("loadtest-url-with-path", lambda ws: ["loadtest", "http://127.0.0.1:9/v2/models", "--model", "m"], 2,
     "names a path (/v2/models) or no server: give the server's address alone, e.g. http://127.0.0.1:8000"),
    ("loadtest-grpc-url-over-http", lambda ws: ["loadtest", "grpc://127.0.0.1:9", "--model", "m"], 2,
     "is grpc://, not --protocol http: pass --protocol grpc"),
    ("loadtest-unknown-scheme", lambda ws: ["loadtest", "ftp://127.0.0.1:9", "--model", "m"], 2,
     "is ftp://, not --protocol http: use http:// or https://"),
    (
        "parity-negative-samples",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--samples", "-1"],
        2,
        "--samples",
    ),
    ("parity-unknown-backend", lambda ws: ["parity", "v1", "--backends", "warp"], 2, "unknown backend 'warp'"),
    (
        "parity-unknown-precision",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--precision", "fp64"],
        2,
        "unknown precision 'fp64'",
    ),
    (
        "parity-images-not-a-dir",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--images", str(ws.root / "none")],
        2,
        "--images",
    ),
    (
        "parity-images-empty",
        lambda ws: ["parity", "v1", "--dir", str(ws.export), "--images", str(ws.folder("e"))],
        2,
        "it is empty",
    ),
    (
        "parity-int8-hint",
        lambda ws: [
            "parity",
            "v1",
            "--onnx",
            str(ws.export / "model.onnx"),
            "--precision",
            "int8",
            "--backends",
            "onnxruntime",
        ],
        2,
        "--int8 --calib DIR",
    ),
    # bench options
    ("bench-batch-bad-element", lambda ws: ["bench", "v1", "--batch", "1,x"], 2, "'x' is not an integer"),
    ("bench-rounds-zero", lambda ws: ["bench", "v1", "--rounds", "0"], 2, "--rounds"),
    ("bench-unknown-suite", lambda ws: ["bench", "--suite", "nonesuch"], 2, "no suite 'nonesuch'"),
    ("bench-suite-unknown-key", lambda ws: ["bench", "--suite", str(suite_with_typo(ws))], 2, "unknown key 'backend'"),
    ("bench-unknown-backend", lambda ws: ["bench", "v1", "--backends", "warp"], 2, "unknown backend 'warp'"),
    ("bench-unknown-device", lambda ws: ["bench", "v1", "--device", "tpu"], 2, "--device must be cpu or cuda"),
    ("bench-unknown-precision", lambda ws: ["bench", "v1", "--precision", "fp64"], 2, "unknown precision 'fp64'"),
    # trt
    (
        "trt-sm90",
        lambda ws: ["trt", "v1", "--compiler", "tensorrt-rtx", "--target", "sm90", "--out", str(ws.export)],
        2,
        "sm90",
    ),
    ("trt-two-precisions", lambda ws: ["trt", "v1", "--fp16", "--int8", "--out", str(ws.export)], 2, "one of"),
]


@pytest.fixture
def ws(tmp_path, export_copy, monkeypatch) -> Workspace:
    """A fresh workspace, the current directory for the case."""
    workspace = Workspace(tmp_path / "ws", export_copy)
    workspace.root.mkdir()
    monkeypatch.chdir(workspace.root)
    return workspace


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, ws):
    name, build, code, fragment = case
    expect_one_line(ws, build(ws), code, fragment)


def expect_one_line(ws: Workspace, args: list[str], code: int, fragment: str):
    """Run the CLI on args: exit `code`, one line on stderr naming `fragment`, no traceback, and every file
    under the workspace as it was (nothing new, nothing changed, no partial file). Returns the result."""
    before = snapshot(ws.root)
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output and not lines[0].startswith("error: unexpected")
    assert snapshot(ws.root) == before  # nothing new, nothing changed, no partial file
    return result


def test_missing_backends_exit_3(export_copy):
    import importlib.util

    out = export_copy("googlenet")
    checks = [] if importlib.util.find_spec("tensorrt") else [
        (["parity", "v1", "--dir", str(out), "--backends", "tensorrt"], "TensorRT")]
    if not torch.cuda.is_available():
        checks.append((["parity", "v1", "--dir", str(out), "--backends", "onnxruntime-cuda", "--samples", "1"], "CUDA"))
    if not checks:
        pytest.skip("TensorRT and a GPU are both here: no backend is missing")
    for args, fragment in checks:
        result = runner.invoke(app, args)
        assert result.exit_code == 3 and fragment in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_safetensors_file_named_pth_is_read_by_its_content(tmp_path):
    from inception_deploy.models.checkpoint import read_state_dict

    ws = Workspace(tmp_path, None)
    disguised = ws.checkpoint("really-safetensors.pth", safetensors=True)
    torch_file = ws.checkpoint("really-torch.safetensors")
    assert len(read_state_dict(disguised)) == len(read_state_dict(torch_file)) > 100


def test_a_16_bit_image_is_scaled_not_clipped(tmp_path):
    """A 16-bit greyscale PNG at mid-grey must come out mid-grey, not white."""
    from PIL import Image

    from inception_deploy.models.registry import get_spec
    from inception_deploy.models.samples import image_batch

    spec = get_spec("googlenet")
    Image.fromarray(np.full((300, 300), 32768, dtype=np.uint16)).save(tmp_path / "grey16.png")
    Image.fromarray(np.full((300, 300), 128, dtype=np.uint8)).save(tmp_path / "grey8.png")
    batch, used, skipped = image_batch(spec, tmp_path)
    assert used == ["grey16.png", "grey8.png"] and not skipped
    assert torch.allclose(batch[0], batch[1], atol=0.02)


def test_a_corrupt_calibration_cache_is_named_discarded_and_rebuilt(export_copy, calib_dir):
    from inception_deploy import export_onnx

    out = export_copy("googlenet")
    manifest = export_onnx(
        "googlenet", weights=None, int8=True, calib=calib_dir, out_dir=out / "re"
    )  # a fresh dir: no cache
    assert manifest["artifacts"][-1]["calibration"]["cache_reused"] is False
    rebuilt = next((out / "re").glob("model.int8.calib-*.json"))
    rebuilt.write_text("{}")
    again = export_onnx("googlenet", weights=None, int8=True, calib=calib_dir, out_dir=out / "re")
    calibration = next(a for a in again["artifacts"] if a["precision"] == "int8")["calibration"]
    assert (
        calibration["cache_reused"] is False
        and calibration["cache_discarded"] == "not an onnxruntime calibration cache"
    )
    assert any("discarded and rebuilt" in w for w in again["warnings"])
    assert json.loads(rebuilt.read_text())["CLS"] == "TensorsData"  # rebuilt, atomically, in its place


def test_a_re_export_keeps_what_still_fits(tmp_path, calib_dir):
    """Same model.onnx: the fp16 and int8 files stay. Another model.onnx: they go, and are listed. Another
    variant's export is replaced only with force. Skipped calibration files are listed."""
    from inception_deploy import export_onnx
    from inception_deploy.core.errors import InputError

    out = tmp_path / "g"
    export_onnx("googlenet", fp16=True, out_dir=out)
    fp16 = (out / "model.fp16.onnx").read_bytes()
    images = tmp_path / "calib"
    shutil.copytree(calib_dir, images)
    (images / "notes.txt").write_text("not an image")
    second = export_onnx("googlenet", int8=True, calib=images, out_dir=out)
    assert {a["path"] for a in second["artifacts"]} == {"model.onnx", "model.int8.onnx", "model.fp16.onnx"}
    assert second["kept"] == ["model.fp16.onnx"] and (out / "model.fp16.onnx").read_bytes() == fp16
    assert any(w.startswith("--calib: skipped notes.txt") for w in second["warnings"])
    third = export_onnx("googlenet", num_classes=10, out_dir=out)  # another head: another model.onnx
    assert sorted(r["path"] for r in third["removed"]) == ["model.fp16.onnx", "model.int8.onnx"]
    assert all("model.onnx this export replaced" in r["why"] for r in third["removed"])
    assert sorted(p.name for p in out.glob("model*.onnx")) == ["model.onnx"]

    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "variant": "inception_v3"}))  # as if v3 were here
    with pytest.raises(InputError, match="--force"):
        export_onnx("googlenet", out_dir=out)
    forced = export_onnx("googlenet", out_dir=out, force=True)
    assert forced["variant"] == "googlenet" and [a["path"] for a in forced["artifacts"]] == ["model.onnx"]


def test_a_model_that_ignores_its_input_is_named(tmp_path):
    """Zero classifier weights: every input gives the bias. A PASS at zero difference would mean nothing."""
    from inception_deploy.models import create_model

    state = create_model("googlenet").state_dict()
    state["fc.weight"].zero_()
    torch.save(state, tmp_path / "dead.pth")
    result = runner.invoke(app, ["export", "v1", "--weights", str(tmp_path / "dead.pth"), "--out", str(tmp_path / "e")])
    assert result.exit_code == 0 and "ignores its input" in result.stderr, result.output
    result = runner.invoke(app, ["parity", "v1", "--dir", str(tmp_path / "e")])
    assert result.exit_code == 0 and "proves nothing" in result.stderr, result.output


def test_a_full_file_system_is_exit_1_and_leaves_no_temporary_file(export_copy, tmp_path):
    """Writes past the file-size limit fail as a full disk does: one line, exit 1, no partial file."""
    import resource

    out = export_copy("googlenet")

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CLI,
            "parity",
            "v1",
            "--dir",
            str(out),
            "--samples",
            "2",
            "--json",
            str(tmp_path / "reports" / "v1" / "report.json"),
        ],
        capture_output=True,
        text=True,
        preexec_fn=small_files,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "while writing" in lines[0] and "report.json" in lines[0], result.stderr
    assert not (tmp_path / "reports").exists()  # neither the temporary file nor the directories made for it


STOPS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "stopped by SIGTERM"),
         signal.SIGHUP: (129, "stopped by SIGHUP")}


def _said_one_interrupted_line(result, fragment: str = "interrupted", sig: int = signal.SIGINT) -> None:
    """One line naming what stopped the command (Ctrl-C, SIGTERM, SIGHUP), and the shell's exit status for it."""
    code, said = STOPS[sig]
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {said}"), result.stderr
    assert fragment.replace("interrupted", said) in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("moment, sig", [("exporting with torch.onnx", signal.SIGINT),
                                         ("calibrating on images", signal.SIGINT),
                                         ("calibrating on images", signal.SIGTERM)])
def test_ctrl_c_during_export_exits_130_and_keeps_the_previous_export(moment, sig, export_copy, calib_dir, tmp_path):
    """Ctrl-C inside torch.export (which would swallow it) and during calibration, and SIGTERM (docker stop,
    systemd, Kubernetes) as Ctrl-C: the previous export stays."""
    out = export_copy("inception_v3")
    before = snapshot(out)
    args = ["export", "v3", "--fp16", "--int8", "--calib", str(calib_dir), "--out", str(out)]  # untrained: other bytes
    result = run_and_interrupt(args, tmp_path, lambda steps: moment in steps[-1], delay_s=1.0, sig=sig)
    _said_one_interrupted_line(result, "no artifact was written", sig)
    assert snapshot(out) == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_during_bench_keeps_the_measurements_and_resume_goes_on(sig, tmp_path):
    log = tmp_path / "b.jsonl"
    args = ["bench", "v1", "--backends", "onnxruntime,torch", "--batch", "1,2", "--rounds", "3", "--warmup-s", "0",
            "--duration-s", "0.3", "--export-root", str(tmp_path / "export"), "--json", str(tmp_path / "b.json")]

    def second_group_begun(steps) -> bool:  # batch 1 is finished and logged; batch 2 has rounds to go
        return "batch 2 · round 1/" in steps[-1] and '"record"' in log.read_text()

    result = run_and_interrupt(args, tmp_path, second_group_begun, sig=sig)
    _said_one_interrupted_line(result, "b.jsonl", sig)
    assert (
        "no report was written" in result.stderr and "--resume" in result.stderr and not (tmp_path / "b.json").exists()
    )
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["batch"] for line in lines if line["type"] == "record"] == [1, 1]

    resumed = runner.invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    records = json.loads((tmp_path / "b.json").read_text())["records"]
    assert [(r["batch"], r["resumed_from"]) for r in records] == [(1, lines[0]["run"])] * 2 + [(2, None)] * 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_during_parity_writes_nothing(sig, export_copy, tmp_path):
    out = export_copy("inception_v3")
    before = snapshot(out)
    result = run_and_interrupt(
        ["parity", "v3", "--dir", str(out), "--samples", "64", "--json", str(tmp_path / "p.json")],
        tmp_path,
        lambda steps: "onnxruntime:" in steps[-1],
        delay_s=0.5,
        sig=sig,
    )
    _said_one_interrupted_line(result, "interrupted: nothing was written", sig)
    assert not (tmp_path / "p.json").exists() and snapshot(out) == before


def test_calibration_caches_that_cannot_serve_are_named(exported):
    """Empty, not onnxruntime's, another calibration method's, or another model's: each is named."""
    import onnx

    from inception_deploy.export.quantize import _cache_problem

    googlenet, _ = exported("googlenet")
    irv2, _ = exported("inception_resnet_v2")
    model = onnx.load(str(googlenet / "model.onnx"))
    own = next(googlenet.glob("model.int8.calib-minmax-*.json"))
    assert _cache_problem(own, model, "minmax") is None
    assert _cache_problem(own, model, "entropy").startswith("made with another calibration method")
    assert "another model" in _cache_problem(next(irv2.glob("model.int8.calib-minmax-*.json")), model, "minmax")
    empty, foreign = Path(googlenet.parent / "empty.json"), Path(googlenet.parent / "foreign.json")
    empty.write_bytes(b"")
    foreign.write_text('{"CLS": "Something"}')
    assert _cache_problem(empty, model, "minmax") == "empty"
    assert _cache_problem(foreign, model, "minmax") == "not an onnxruntime calibration cache"
    empty.unlink()
    foreign.unlink()


# A failed command changes nothing that was there before: every target is checked before the work starts,
# and a commit that fails half-way puts back what it had replaced.


def _int8_cache_name(export: Path) -> str:
    manifest = json.loads((export / "manifest.json").read_text())
    return next(a for a in manifest["artifacts"] if a["path"] == "model.int8.onnx")["calibration"]["cache"]


def _into_directory(path: Path) -> Path:
    path.unlink(missing_ok=True)
    path.mkdir()
    return path


def test_a_directory_at_the_calibration_cache_is_refused_before_the_export(ws, calib_dir):
    _into_directory(ws.export / _int8_cache_name(ws.export))
    args = ["export", "v1", "--int8", "--calib", str(calib_dir), "--out", str(ws.export)]
    expect_one_line(ws, args, 2, "is a directory where a file is to be written")


def test_a_directory_at_manifest_json_is_refused_before_the_export(ws):
    _into_directory(ws.export / "manifest.json")
    expect_one_line(ws, ["export", "v1", "--out", str(ws.export)], 2, "manifest.json is a directory")


@pytest.mark.parametrize("name", ["model.fp16.rtx.engine", "model.fp16.rtx.engine.runtime-cache"])
def test_a_directory_at_an_engine_name_is_refused_before_the_build(ws, name):
    _into_directory(ws.export / name)
    args = ["trt", "v1", "--compiler", "tensorrt-rtx", "--fp16", "--out", str(ws.export)]
    expect_one_line(ws, args, 2, f"{name} is a directory where a file is to be written")


def test_a_directory_named_model_onnx_is_named_not_called_missing(ws):
    _into_directory(ws.export / "model.int8.onnx")
    args = ["trt", "v1", "--compiler", "tensorrt-rtx", "--int8", "--out", str(ws.export)]
    result = expect_one_line(ws, args, 2, "model.int8.onnx is a directory")
    assert "does not exist" not in result.stderr


def test_an_unreadable_manifest_is_replaced_only_with_force(ws):
    ws.manifest('{"variant": "googlenet", "artif')
    expect_one_line(ws, ["export", "v1", "--out", str(ws.export)], 2, "--force")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda m: m.update(input=None), '"input" is null'),
        (lambda m: m.update(batch=0), '"batch" is 0'),
        (lambda m: m["artifacts"][0].update(path="../../x.onnx"), "is not a plain file name"),
        (lambda m: m["artifacts"][0].update(sha256=None), '"artifacts[0].sha256" is null'),
        (lambda m: m["artifacts"][-1].update(source={"path": "/etc/passwd", "sha256": "0" * 64}),
         "is not a plain file name"),
    ],
    ids=["input-null", "batch-zero", "path-escapes", "sha256-null", "source-absolute"],
)
def test_a_manifest_of_the_wrong_shape_is_named_by_its_field(ws, edit, fragment):
    manifest = json.loads((ws.export / "manifest.json").read_text())
    edit(manifest)
    ws.manifest(json.dumps(manifest))
    for args in (["parity", "v1", "--dir", str(ws.export)], ["trt", "v1", "--compiler", "tensorrt-rtx",
                                                             "--out", str(ws.export)]):
        expect_one_line(ws, args, 2, fragment)


def test_a_commit_that_fails_half_way_puts_back_every_file(tmp_path, monkeypatch):
    from inception_deploy.core.artifacts import staged

    for name in ("a.onnx", "b.onnx", "manifest.json"):
        (tmp_path / name).write_text(f"old {name}")
    before = snapshot(tmp_path)
    real_replace, calls = os.replace, []

    def replace_failing_on_the_manifest(src, dst):
        calls.append(dst)
        if Path(dst).name == "manifest.json" and not str(src).endswith(".previous"):
            raise OSError(5, "Input/output error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_failing_on_the_manifest)
    with pytest.raises(OSError):
        with staged(tmp_path) as staging:
            for name in ("a.onnx", "b.onnx", "manifest.json"):
                staging.path(tmp_path / name).write_text(f"new {name}")
    assert snapshot(tmp_path) == before  # a.onnx and b.onnx put back, no temporary or set-aside file left
    assert any(Path(d).name == "b.onnx" for d in calls)  # the renames did happen before the failure


def test_a_directory_appearing_before_the_commit_changes_nothing(tmp_path):
    from inception_deploy.core.artifacts import staged
    from inception_deploy.core.errors import InputError

    (tmp_path / "a.onnx").write_text("old a")
    with pytest.raises(InputError, match="b.onnx is a directory"):
        with staged(tmp_path) as staging:
            staging.path(tmp_path / "a.onnx").write_text("new a")
            staging.path(tmp_path / "b.onnx").write_text("new b")
            (tmp_path / "b.onnx").mkdir()  # after staging, before the commit
    assert (tmp_path / "a.onnx").read_text() == "old a"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.onnx", "b.onnx"]


@pytest.mark.parametrize("delay_s", [0.2, 0.5, 1.0, 2.0])  # after Python's own start-up (~50 ms), out of our hands
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path, delay_s):
    """The console script, interrupted while it imports torch and the command line (an export takes far longer
    than these delays, so the interrupt always lands before it ends): no traceback, nothing written."""
    script = Path(sys.executable).with_name("inception-deploy")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "inception_deploy"]
    process = subprocess.Popen([*command, "export", "v1", "--out", "out"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay_s)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("note: no --weights")]
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
    assert list(tmp_path.iterdir()) == []


def _googlenet_state(ws: Workspace, name: str, change) -> Path:
    """googlenet's untrained state dict, changed by `change(state)` and saved with torch.save."""
    from inception_deploy.models import create_model

    state = {k: v.clone() for k, v in create_model("googlenet").state_dict().items()}
    change(state)
    path = ws.root / name
    torch.save(state, path)
    return path


def _plain_pickle(ws: Workspace) -> Path:
    import pickle

    from inception_deploy.models import create_model

    path = ws.root / "pickled.pth"
    with open(path, "wb") as f:
        pickle.dump(create_model("googlenet").state_dict(), f)
    return path


_KEY = "inception3a.branch1.conv.weight"


@pytest.mark.parametrize("build, fragment", [
    (lambda ws: _googlenet_state(ws, "sparse.pth", lambda s: s.update({_KEY: s[_KEY].to_sparse()})),
     f"tensor {_KEY} is sparse (sparse_coo)"),
    (lambda ws: _googlenet_state(ws, "complex.pth", lambda s: s.update({_KEY: s[_KEY].to(torch.complex64)})),
     f"tensor {_KEY} is complex (complex64)"),
    (lambda ws: _googlenet_state(ws, "int.pth", lambda s: s.update({_KEY: s[_KEY].to(torch.int64)})),
     f"tensor {_KEY} is int64, where the model has float32 weights"),
    (_plain_pickle, "is a plain Python pickle, not a torch.save or safetensors checkpoint"),
    (lambda ws: _googlenet_state(ws, "incomplete.pth", lambda s: s.pop("inception3a.branch1.bn.bias")),
     "missing key 'inception3a.branch1.bn.bias', while every key it has is googlenet's: it is incomplete"),
], ids=["sparse", "complex", "integer", "plain-pickle", "one-missing-key"])
def test_a_checkpoint_with_bad_content_is_named(ws, build, fragment):
    expect_one_line(ws, ["export", "v1", "--weights", str(build(ws))], 2, fragment)


@pytest.mark.parametrize("change, fragment", [
    ({"stats": {}}, "line 2 is damaged (an ok record whose stats lack throughput"),
    ({"warnings": "unstable"}, "line 2 is damaged (a record with fields of the wrong type: warnings)"),
    (lambda r: {"stats": {**r["stats"], "throughput": float("inf"), "p50_ms": -1e308}},
     "line 2 is damaged (an ok record with impossible figures: throughput, p50_ms"),
    ({"status": "skipped", "stats": None, "reason": None}, "line 2 is damaged (a skipped record without its reason"),
], ids=["ok-without-figures", "wrong-type", "impossible-figures", "skipped-without-reason"])
def test_an_edited_bench_log_is_named_by_line_on_resume(ws, change, fragment):
    """A log whose run --resume would keep (same settings, machine and source) but whose record was edited."""
    from inception_deploy.bench.environment import environment
    from inception_deploy.bench.record import BenchRecord
    from inception_deploy.bench.run import make_plan
    from inception_deploy.core.timing import combine_rounds, summarize

    options = dict(backends=["torch"], precisions=["fp32"], batches=[1], rounds=1, warmup_s=0.0, duration_s=0.05)
    plan = make_plan(variants=["v1"], **options).to_dict()
    record = BenchRecord("googlenet", "torch", "fp32", 1, "cpu", "ok",
                         stats=combine_rounds([summarize([0.01, 0.012], batch=1)]),
                         source="PyTorch model, untrained init (seed 0)").to_dict()
    log = ws.folder("report") / "bench.jsonl"
    log.write_text(json.dumps({"run": "r1", "type": "run", "environment": environment("cpu"), "plan": plan}) + "\n"
                   + json.dumps({"run": "r1", "type": "record", **record,
                                 **(change(record) if callable(change) else change)}) + "\n")
    args = ["bench", "v1", "--backends", "torch", "--precision", "fp32", "--batch", "1", "--rounds", "1",
            "--warmup-s", "0", "--duration-s", "0.05", "--export-root", str(ws.root / "export"),
            "--report", str(ws.root / "report"), "--resume"]
    expect_one_line(ws, args, 2, fragment)


class _Watchdog:
    """Fails the test, instead of hanging it, when what it guards blocks (opening a FIFO does)."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def expire(signum, frame):
            raise TimeoutError(f"blocked for {self.seconds} s (a FIFO opened?)")

        self.previous = signal.signal(signal.SIGALRM, expire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


def test_a_fifo_among_images_is_listed_as_skipped_never_opened(tmp_path):
    from PIL import Image

    from inception_deploy.models.registry import get_spec
    from inception_deploy.models.samples import image_batch

    Image.fromarray(np.full((300, 300, 3), 128, dtype=np.uint8)).save(tmp_path / "grey.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "more").mkdir()
    with _Watchdog(60):
        _, used, skipped = image_batch(get_spec("googlenet"), tmp_path)
    assert used == ["grey.png"]
    assert skipped == [("more", "a folder: the images inside folders are not read"),
                       ("pipe.jpg", "a FIFO (named pipe), not an image file")]


def test_a_folder_holding_only_a_fifo_names_it(ws):
    os.mkfifo(ws.folder("images") / "camera")
    with _Watchdog(300):
        expect_one_line(ws, ["parity", "v1", "--dir", str(ws.export), "--images", str(ws.root / "images")], 2,
                        "holds no readable image (1 entry skipped, e.g. camera: a FIFO (named pipe)")


def test_images_above_pillows_pixel_limit_are_skipped_with_the_reason_and_no_warning(tmp_path):
    """A 1-bit PNG of 10000x9000 (Pillow warns: 90 M pixels > 89.5 M) and one of 14000x13000 (Pillow refuses:
    over twice the limit) are a few kB on disk: listed as skipped, nothing raw on stderr, none decoded."""
    import warnings

    from PIL import Image

    from inception_deploy.models.registry import get_spec
    from inception_deploy.models.samples import image_batch

    Image.new("1", (10000, 9000)).save(tmp_path / "big.png")
    Image.new("1", (14000, 13000)).save(tmp_path / "bomb.png")
    Image.fromarray(np.full((300, 300, 3), 128, dtype=np.uint8)).save(tmp_path / "grey.png")
    assert all((tmp_path / name).stat().st_size < 100_000 for name in ("big.png", "bomb.png"))
    with warnings.catch_warnings(record=True) as caught, _Watchdog(60):
        warnings.simplefilter("always")
        _, used, skipped = image_batch(get_spec("googlenet"), tmp_path)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert used == ["grey.png"] and [name for name, _ in skipped] == ["big.png", "bomb.png"]
    assert all("Pillow's limit against decompression bombs" in why for _, why in skipped)


@pytest.mark.parametrize("name", ["../escaped", "a/b c"])
def test_triton_refuses_a_name_triton_cannot_load(ws, name):
    """A --name with a path separator, a space or a leading dot: refused naming the rule, nothing written anywhere
    (before, ../escaped wrote beside --repo and "a/b c" a model Triton cannot load)."""
    expect_one_line(ws, ["triton", "v1", "--dir", str(ws.export), "--name", name], 2,
                    "is not a valid Triton model name: use letters, digits")
    assert not (ws.root / "escaped").exists() and not (ws.root / "model_repository").exists()


@pytest.mark.parametrize("command", ["triton", "serve"])
def test_labels_that_do_not_fit_the_head_are_refused_naming_both_counts(ws, command):
    """--labels with fewer names than the head has classes: refused before anything is written or started."""
    labels = ws.file("labels.txt", b"cat\ndog\n")
    expect_one_line(ws, [command, "v1", "--dir", str(ws.export), "--labels", str(labels)], 2,
                    "has 2 names, but the model's head has 1000 classes")


def test_a_turing_target_with_int8_is_refused_before_the_build(ws):
    """TensorRT-RTX has no int8 (or fp32) GEMM for sm75: its builder failed only at the end of the build."""
    expect_one_line(ws, ["trt", "v1", "--target", "sm75", "--int8", "--out", str(ws.export)], 2,
                    "TensorRT-RTX compiles only fp16 for Turing (sm75), not int8: build sm75 from model.fp16.onnx "
                    "with --fp16 --target sm75, and int8 for sm80 and later")


def test_a_target_with_enterprise_tensorrt_says_why_whatever_the_target(ws):
    """Refused for the compiler, even for sm90, which is no TensorRT-RTX target (whose message would send the user
    back to --compiler tensorrt)."""
    expect_one_line(ws, ["trt", "v1", "--compiler", "tensorrt", "--target", "sm90", "--out", str(ws.export)], 2,
                    "--target is refused with --compiler tensorrt: enterprise TensorRT builds for the GPU it runs on")


@pytest.mark.parametrize("where", ["listed-in-the-manifest", "given-with---onnx"])
def test_parity_names_a_directory_in_an_artifacts_place_not_missing(ws, where):
    """A directory named model.onnx is not "missing": parity says what is there and how to clear it."""
    if where == "listed-in-the-manifest":
        path = ws.export / "model.int8.onnx"
        path.unlink()
        path.mkdir()
        args = ["parity", "v1", "--dir", str(ws.export)]
    else:
        path = ws.folder("model.onnx")
        args = ["parity", "v1", "--onnx", str(path)]
    result = expect_one_line(ws, args, 2, f"{path} is a directory, not the artifact file: move it away, then ")
    assert "does not exist" not in result.stderr and "missing" not in result.stderr


def test_bench_names_a_directory_in_an_artifacts_place_not_missing(ws):
    """bench: a directory at model.int8.onnx skips the row naming it; one at model.onnx is refused before any
    export is made over it."""
    from inception_deploy.bench.plan import BenchPlan
    from inception_deploy.bench.sweep import run_bench

    for name in ("model.int8.onnx", "model.onnx"):
        (ws.export / name).unlink()
        (ws.export / name).mkdir()
    plan = BenchPlan(variants=["googlenet"], backends=["onnxruntime"], precisions=["int8"], batches=[1],
                     warmup_s=0, duration_s=0.01, rounds=1, export_root=ws.export.parent)
    [record] = run_bench(plan)
    assert record.status == "skipped" and record.reason.startswith(
        f"{ws.export / 'model.int8.onnx'} is a directory, not the artifact file: move it away, then make it with"
    ), record.reason
    args = ["bench", "v1", "--backends", "onnxruntime", "--precision", "fp32", "--batch", "1",
            "--export-root", str(ws.export.parent)]
    expect_one_line(ws, args, 2, f"{ws.export / 'model.onnx'} is a directory, not the artifact file: move it away")


# serve: what it listens with is checked before tritonserver starts (issue 18, item 2)
SERVE_CASES = [
    ("serve-max-batch-zero", ["--max-batch", "0"], "--max-batch must be at least 1"),
    ("serve-same-ports", ["--http-port", "18950", "--grpc-port", "18950"], "--http-port and --grpc-port are both"),
    ("serve-address-not-an-ip", ["--address", "999.1.1.1"], "--address 999.1.1.1 is not an IP address"),
    ("serve-address-not-this-machine", ["--address", "192.0.2.1"], "is not an address of this machine"),
    ("serve-address-ipv6", ["--address", "::1"], "is IPv6"),
    ("serve-address-unknown-name", ["--address", "no-such-host.invalid"], "does not resolve"),
]


@pytest.mark.parametrize("case", SERVE_CASES, ids=[c[0] for c in SERVE_CASES])
def test_serve_checks_what_it_listens_with_before_it_starts(case, ws):
    _, args, fragment = case
    expect_one_line(ws, ["serve", "v1", "--dir", str(ws.export), *args], 2, fragment)


@pytest.mark.parametrize("option", ["--http-port", "--grpc-port", "--metrics-port"])
def test_serve_names_the_busy_port_and_its_option(ws, option):
    """A port something listens on (a second `serve` on the same ports) is named before tritonserver starts."""
    import socket

    probes = [socket.socket() for _ in range(3)]
    for s in probes:
        s.bind(("127.0.0.1", 0))
    ports = dict(zip(("--http-port", "--grpc-port", "--metrics-port"), (s.getsockname()[1] for s in probes)))
    for s in probes:
        s.close()
    args = ["serve", "v1", "--dir", str(ws.export), *(x for name, port in ports.items() for x in (name, str(port)))]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports[option]))
        busy.listen()
        expect_one_line(ws, args, 2, f"{option} {ports[option]} is in use on 127.0.0.1: stop what listens there or "
                                     f"choose another {option}")


@pytest.mark.parametrize("problem", ["unknown-precision", "reference-missing"])
def test_loadtest_check_names_its_reference_before_any_request(ws, problem):
    """--check's local ONNX is found (or named) before the server is asked anything: the URL is never reached."""
    args = ["loadtest", "http://127.0.0.1:9", "--model", "googlenet", "--check", "--dir", str(ws.export)]
    if problem == "unknown-precision":
        expect_one_line(ws, [*args, "--precision", "fp64"], 2, "--precision must be one of fp32, fp16, int8")
    else:
        (ws.export / "model.int8.onnx").unlink()
        expect_one_line(ws, [*args, "--precision", "int8"], 2, f"{ws.export / 'model.int8.onnx'} does not exist: "
                                                                "--check --precision int8 compares with it")


def test_trt_that_would_make_the_fp16_onnx_changes_nothing_when_it_fails(ws):
    """The fp16 ONNX `trt --fp16` makes when it is missing lands with the engine or not at all."""
    (ws.export / "model.fp16.onnx").unlink()
    _into_directory(ws.export / "model.fp16.rtx.engine")
    args = ["trt", "v1", "--compiler", "tensorrt-rtx", "--fp16", "--out", str(ws.export)]
    expect_one_line(ws, args, 2, "model.fp16.rtx.engine is a directory where a file is to be written")


def test_ctrl_c_during_a_commit_waits_for_it_to_end_whole(tmp_path, monkeypatch):
    """A real SIGINT between two renames of a commit: every file lands, nothing is set aside, then Ctrl-C."""
    from inception_deploy.core.artifacts import staged

    for name in ("a.onnx", "manifest.json"):
        (tmp_path / name).write_text(f"old {name}")
    real_replace = os.replace

    def replace_then_interrupt(src, dst):
        real_replace(src, dst)
        if Path(dst).name == "a.onnx":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        with staged(tmp_path) as staging:
            for name in ("a.onnx", "manifest.json"):
                staging.path(tmp_path / name).write_text(f"new {name}")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.onnx": "new a.onnx",
                                                                  "manifest.json": "new manifest.json"}


# Found by a second probe, as a new user would: the same classes, new cases.


def test_a_fifo_at_manifest_json_is_named_never_read(ws):
    (ws.export / "manifest.json").unlink()
    os.mkfifo(ws.export / "manifest.json")
    with _Watchdog(120):
        expect_one_line(ws, ["parity", "v1", "--dir", str(ws.export)], 2, "manifest.json is not a regular file")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda m: m["input"].update(shape=["batch", "x", 224, 224]), '"input.shape" is'),
        (lambda m: m["input"].update(dtype="bfloat16"), '"input.dtype" is "bfloat16"'),
        (lambda m: m["output"].update(shape=[]), '"output.shape" is []'),
        (lambda m: m["output"].update(shape=["batch", 10**30]), '"output.shape" is'),
        (lambda m: m["output"].update(name=""), '"output.name" is ""'),
        (lambda m: m.update(num_classes=10**30), '"num_classes" is'),
        (lambda m: m.update(weights={"path": "w.pth"}), '"weights" is'),
        (lambda m: m["artifacts"][0].update(kind=["onnx"]), '"artifacts[0].kind" is ["onnx"]'),
    ],
    ids=["input-shape-word", "input-dtype", "output-shape-empty", "output-classes-absurd", "output-name-empty",
         "num-classes-absurd", "weights-without-sha256", "kind-a-list"],
)
def test_a_manifest_field_of_the_wrong_shape_is_named_however_deep(ws, edit, fragment):
    manifest = json.loads((ws.export / "manifest.json").read_text())
    edit(manifest)
    ws.manifest(json.dumps(manifest))
    for args in (["parity", "v1", "--dir", str(ws.export)], ["triton", "v1", "--dir", str(ws.export), "--kind", "cpu",
                                                             "--repo", str(ws.root / "repo")]):
        expect_one_line(ws, args, 2, fragment)


def test_a_checkpoint_keyed_by_numbers_is_no_state_dict(ws):
    path = ws.root / "numbered.pth"
    torch.save({"state_dict": {i: torch.zeros(2) for i in range(3)}}, path)
    expect_one_line(ws, ["export", "v1", "--weights", str(path), "--out", str(ws.root / "out")], 2,
                    "its tensors are keyed by int")


def test_a_thin_strip_and_a_nan_image_are_skipped_with_the_reason(tmp_path):
    import warnings

    from conftest import sample_photographs
    from PIL import Image

    from inception_deploy.models.registry import get_spec
    from inception_deploy.models.samples import image_batch

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("1", (30000, 1)).save(folder / "strip.png")  # 30000x1: resized to a 256-pixel shorter side, ~2 GB
    Image.fromarray(np.full((64, 64), np.nan, np.float32), "F").save(folder / "nan.tiff")
    shutil.copy(sample_photographs() / "china.jpg", folder / "china.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value encountered in cast" must not happen
        batch, used, skipped = image_batch(get_spec("v1"), folder)
    assert used == ["china.jpg"] and batch.shape[0] == 1
    reasons = dict(skipped)
    assert "would be 7680000x256 pixels" in reasons["strip.png"], reasons
    assert "NaN or Inf pixels" in reasons["nan.tiff"], reasons


def test_triton_names_a_file_in_the_way_of_the_model_directory(ws):
    ws.file("repo/googlenet", b"not a directory")
    args = ["triton", "v1", "--dir", str(ws.export), "--kind", "cpu", "--repo", str(ws.root / "repo")]
    expect_one_line(ws, args, 2, "googlenet is in the way: it is not a directory")


def test_trt_refuses_a_workspace_that_is_not_a_number(ws):
    args = ["trt", "v1", "--compiler", "tensorrt-rtx", "--fp16", "--out", str(ws.export), "--workspace-gb", "nan"]
    expect_one_line(ws, args, 2, "--workspace-gb must be a finite number more than 0, not nan")


def test_bench_refuses_a_fifo_among_its_report_files_before_measuring(ws):
    os.mkfifo(ws.folder("report") / "README.md")
    args = ["bench", "v1", "--backends", "torch", "--precision", "fp32", "--batch", "1", "--rounds", "1",
            "--warmup-s", "0", "--duration-s", "0.05", "--export-root", str(ws.root / "export"),
            "--report", str(ws.root / "report")]
    with _Watchdog(120):
        expect_one_line(ws, args, 2, "README.md is not a regular file")


def test_a_labels_file_with_a_byte_order_mark_loses_the_mark(ws):
    import inception_deploy.serving

    names = (Path(inception_deploy.serving.__file__).parent / "imagenet_classes.txt").read_text().splitlines()
    labels = ws.file("labels.txt", ("\ufeff" + "\n".join(names) + "\n").encode("utf-8"))
    result = runner.invoke(app, ["triton", "v1", "--dir", str(ws.export), "--kind", "cpu", "--repo",
                                 str(ws.root / "repo"), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert (ws.root / "repo" / "googlenet" / "labels.txt").read_text(encoding="utf-8").splitlines()[0] == names[0]


def test_ctrl_c_inside_an_import_a_library_turns_into_import_error_stays_ctrl_c(monkeypatch):
    import importlib

    from inception_deploy.core.deps import require

    def interrupted_import(name, *args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("import numpy failed") from None  # what numpy makes of it: context kept

    monkeypatch.setattr(importlib, "import_module", interrupted_import)
    with pytest.raises(KeyboardInterrupt):
        require("onnxruntime")


@pytest.mark.parametrize("command", [["export", "v1", "--out"], ["bench", "v1", "--duration-s", "0.01", "--report"],
                                     ["parity", "v1", "--json"]])
def test_an_output_path_the_file_system_cannot_take_is_refused_before_any_work(ws, command):
    """A name over the file system's limit, and a dangling link, for each kind of output option: exit 2, naming it."""
    if command[0] == "parity":
        command = ["parity", "v1", "--dir", str(ws.export), "--json"]
    expect_one_line(ws, [*command, str(ws.root / ("x" * 300) / "out")], 2, "bytes long")
    (ws.root / "dangling").symlink_to(ws.root / "nowhere")
    target = ws.root / "dangling" / ("out.json" if command[-1] == "--json" else "out")
    expect_one_line(ws, [*command, str(target)], 2, "which does not exist: remove the link")
