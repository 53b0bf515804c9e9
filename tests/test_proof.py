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


def test_a_call_without_its_part_says_so_in_one_line(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PROOF_PARTS": str(tmp_path / "none"), "PROOF_HOME": str(tmp_path / "d"),
           "OUT": str(tmp_path / "out")}
    result = subprocess.run(["bash", str(SCRIPT), "call", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert 'make this call with carry [".proof/part-2"]' in (tmp_path / "out" / "call-2.log").read_text()
    bad = subprocess.run(["bash", str(SCRIPT), "call", "9"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "call K takes 1..7" in bad.stderr
