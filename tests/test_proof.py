"""The GPU proof (benchmarks/gpu/proof.sh) rehearsed on the CPU, so that it cannot rot between the rare leases
of a GPU: fake parts carried, joined, checked and installed; every call's work run with --device cpu and tiny
windows; the report joined from five runs by `bench --resume`; the use_tf32 A/B; the wheels packed, carried
and checked file by file against their RECORD."""

import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu" / "proof.sh"
WHEELPACK = ROOT / "benchmarks" / "gpu" / "wheelpack.py"


@pytest.mark.slow
def test_the_gpu_proof_rehearses_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", str(SCRIPT), "rehearse"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rehearsal: the report joins rows of 5 runs; the A/B made 4 measurements" in result.stdout
    assert "rehearsal passed" in result.stdout
    assert not list(tmp_path.glob("tmp.*"))  # the rehearsal removes its parts, device folder and outputs


def test_plan_prints_every_call_with_its_carry_and_limit():
    result = subprocess.run(["bash", str(SCRIPT), "plan"], cwd=ROOT, env={**os.environ, "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for k in range(1, 5):  # onnxruntime-gpu and onnxsim, packed with xz, travel in four parts
        assert f'[".proof/part-{k}"]' in result.stdout
    assert '[".proof/part-5"]' not in result.stdout
    # torch fp32 and fp16 in both layouts, torch.compile fp16, ONNX Runtime fp32 and fp16 in NCHW and NHWC
    assert "9 settings per (variant, batch) group" in result.stdout
    assert "bash benchmarks/gpu/proof.sh call K" in result.stdout
    planned = int(re.search(r"= (\d+) s of the lease's 900", result.stdout).group(1))
    assert planned <= 11 * 60  # the budget: the important figures within 11 minutes, the start included
    order = [line.split()[0] for line in result.stdout.splitlines() if "priority" in line]
    assert order == ["2", "3", "4", "5"]  # torch.compile while the parts arrive, then ORT + the A/B, then the rest


def test_a_call_without_its_part_or_its_predecessor_says_so_in_one_line(tmp_path):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PROOF_PARTS": str(tmp_path / "none"),
        "PROOF_HOME": str(tmp_path / "d"),
    }

    def call(*args):
        out = tmp_path / f"out-{'-'.join(args)}"
        result = subprocess.run(["bash", str(SCRIPT), "call", *args], cwd=ROOT, env={**env, "OUT": str(out)},
                                capture_output=True, text=True, timeout=120)
        return result, (out / f"call-{args[0]}.log").read_text() if (out / f"call-{args[0]}.log").exists() else ""

    result, log = call("2")  # a fresh machine: call 1 never ran here
    assert result.returncode == 2 and "call 1's work is not on this machine" in log
    result, log = call("6", "300")
    assert result.returncode == 2 and "call 4's work is not on this machine" in log
    (tmp_path / "d" / "stage").mkdir(parents=True, exist_ok=True)
    result, log = call("1", "100")  # facts pass here (the dev venv has every package); then its part is missing
    assert result.returncode == 2 and 'make this call with carry [".proof/part-1"]' in log
    bad = subprocess.run(
        ["bash", str(SCRIPT), "call", "9"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "call K takes 1..7" in bad.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "call", "1", "ten"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "LIMIT_S is whole seconds" in bad.stderr
    bare = subprocess.run(["bash", str(SCRIPT), "call"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and bare.stderr.strip() == "proof: call K takes 1..7, not ''"


def test_plan_with_a_python_that_lacks_the_package_says_so_in_one_line(tmp_path):
    bare = tmp_path / "python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")  # no site-packages: no inception_deploy
    bare.chmod(0o755)
    result = subprocess.run(["bash", str(SCRIPT), "plan"], cwd=tmp_path, env={**os.environ, "PYTHON": str(bare)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith(f"proof: {bare} cannot import inception_deploy")


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    """A real wheel: its files and a RECORD with each one's sha256 and size."""
    def digest(data: bytes) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

    record = "".join(f"{k},sha256={digest(v)},{len(v)}\n" for k, v in files.items()) + "demo-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in {**files, "demo-0.1.dist-info/RECORD": record.encode()}.items():
            z.writestr(name, data)
    return path


def test_a_packed_wheel_installs_checked_against_its_record(tmp_path):
    wheel = _wheel(tmp_path / "demo-0.1-py3-none-any.whl", {"demo/__init__.py": b"X = 1\n",
                                                            "demo/lib.so": os.urandom(5000),
                                                            "demo-0.1.dist-info/METADATA": b"Name: demo\n"})

    def wheelpack(*args):
        return subprocess.run([sys.executable, str(WHEELPACK), *map(str, args)], capture_output=True, text=True,
                              timeout=120)

    assert wheelpack("pack", wheel, tmp_path / "demo.tar.xz").returncode == 0
    done = wheelpack("install", tmp_path / "demo.tar.xz", tmp_path / "site")
    assert done.returncode == 0 and "3 files match the wheel's RECORD" in done.stdout, done.stderr
    assert (tmp_path / "site" / "demo" / "__init__.py").read_bytes() == b"X = 1\n"

    # a pack whose file differs from what the wheel's RECORD says: named in one line, exit 2
    import tarfile

    with tarfile.open(tmp_path / "demo.tar.xz") as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (tmp_path / "unpacked" / "demo" / "lib.so").write_bytes(b"tampered")
    with tarfile.open(tmp_path / "bad.tar.xz", "w:xz") as tar:
        tar.add(tmp_path / "unpacked" / "demo", "demo")
        tar.add(tmp_path / "unpacked" / "demo-0.1.dist-info", "demo-0.1.dist-info")
    bad = wheelpack("install", tmp_path / "bad.tar.xz", tmp_path / "site2")
    assert bad.returncode == 2 and "demo/lib.so does not match the wheel's RECORD" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    (tmp_path / "junk.tar.xz").write_bytes(b"not xz")
    junk = wheelpack("install", tmp_path / "junk.tar.xz", tmp_path / "site3")
    assert junk.returncode == 2 and junk.stderr.startswith("wheelpack:")
