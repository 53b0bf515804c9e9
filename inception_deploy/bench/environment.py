"""What a benchmark ran on: versions, CPU, GPU and driver, and which compilers this machine has."""

from __future__ import annotations

import importlib
import logging
import os
import platform
import subprocess
from pathlib import Path

import torch

from ..core.compilers import COMPILERS, installed
from ..core.errors import first_line
from ..core.version import __version__, source_digest

log = logging.getLogger(__name__)


def environment(device: str) -> dict:
    import onnxruntime

    env = {
        "inception_deploy": __version__, "inception_deploy_source": source_digest(),
        "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "onnxruntime_providers": onnxruntime.get_available_providers(),
        "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   driver=nvidia_driver(), compute_capability="sm%d%d" % torch.cuda.get_device_capability())
    for name, compiler in COMPILERS.items():
        try:
            env[name] = importlib.import_module(compiler.module).__version__ if installed(compiler) else None
        except Exception as err:  # noqa: BLE001 - installed but broken (native libraries): say so, measure the rest
            env[name] = f"unusable: {first_line(err)}"
    return env


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.TimeoutExpired):
        return None
