"""The GPU proof (benchmarks/gpu/proof.sh) rehearsed on the CPU, so that it cannot rot between the rare leases
of a GPU: fake parts carried, joined, checked and installed; every call's work run with --device cpu and tiny
windows; the report joined from four runs by `bench --resume`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu" / "proof.sh"
pytestmark = pytest.mark.slow


def test_the_gpu_proof_rehearses_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    result = subprocess.run(["bash", str(SCRIPT), "rehearse"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rehearsal: the report joins rows of 4 runs" in result.stdout
    assert "rehearsal passed" in result.stdout
    assert not list(tmp_path.glob("tmp.*"))  # the rehearsal removes its parts, device folder and outputs


def test_plan_prints_every_call_with_its_carry_and_limit():
    result = subprocess.run(["bash", str(SCRIPT), "plan"], cwd=ROOT, env={**os.environ, "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for k in range(1, 6):
        assert f'[".proof/part-{k}"]' in result.stdout
    assert "12 settings per (variant, batch) group" in result.stdout
    assert "bash benchmarks/gpu/proof.sh call K" in result.stdout


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
    assert result.returncode == 2 and "call 5's work is not on this machine" in log
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
