"""Prove that ONNX Runtime runs an export on the provider asked for, not silently on the CPU.

    python benchmarks/gpu/prove_ort.py EXPORT_DIR --device cuda --json OUT.json

onnxruntime-gpu lists CUDAExecutionProvider even where CUDA cannot start, and a session asked for it falls back
to the CPU without an error (../shared/reference/FACTS.md). This checks what the session really did: its first
provider, where its nodes were placed, and that its outputs agree with the CPU provider's. Exit 0 when proved,
1 when the session ran elsewhere or disagrees, 3 when the provider cannot start (the runner's one line).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from inception_deploy.core.compare import difference
from inception_deploy.core.errors import InceptionDeployError
from inception_deploy.core.manifest import read_manifest
from inception_deploy.core.tolerances import TOLERANCES
from inception_deploy.models.registry import get_spec
from inception_deploy.models.samples import random_batch
from inception_deploy.runners import BACKENDS, open_runner

BACKEND = {"cuda": "onnxruntime-cuda", "cpu": "onnxruntime"}
MIN_SHARE = 0.9  # of the graph's nodes placed on the provider asked for


def prove(export_dir: Path, device: str) -> dict:
    import onnxruntime as ort

    manifest = read_manifest(export_dir) or {}
    spec = get_spec(manifest.get("variant") or export_dir.name)
    x = random_batch(spec, 4, seed=0).numpy()
    outputs, facts = {}, {"onnxruntime": ort.__version__, "onnxruntime_from": str(Path(ort.__file__).parent),
                          "available_providers": ort.get_available_providers()}
    for name in dict.fromkeys((BACKEND[device], "onnxruntime")):
        with open_runner(BACKENDS[name], artifact=export_dir / "model.onnx") as runner:
            feed = {runner.inputs[0].name: x}
            outputs[name] = np.asarray(next(iter(runner.run(feed).values())), dtype=np.float32)
            if name == BACKEND[device]:
                facts["session_providers"] = runner.session.get_providers()
                facts["nodes_per_provider"] = runner.nodes_per_provider()
    provider = facts["session_providers"][0]
    nodes = facts["nodes_per_provider"] or {}
    share = nodes.get(provider, 0) / max(1, sum(nodes.values())) if nodes else None
    diff = difference(outputs["onnxruntime"], outputs[BACKEND[device]])
    facts.update(provider=provider, share_on_provider=share, vs_cpu_provider=diff.to_dict(),
                 agrees=TOLERANCES["fp32"].passes(diff))
    problems = []
    if device == "cuda" and provider != "CUDAExecutionProvider":
        problems.append(f"the session's first provider is {provider}, not CUDAExecutionProvider")
    if share is not None and share < MIN_SHARE:
        problems.append(f"only {share:.0%} of the nodes ran on {provider}: {nodes}")
    if not facts["agrees"]:
        problems.append(f"outputs leave the fp32 tolerance against the CPU provider: {diff.to_dict()}")
    facts["problems"] = problems
    return facts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--device", choices=sorted(BACKEND), default="cuda")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        facts = prove(args.export_dir, args.device)
    except InceptionDeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    if args.json:
        args.json.write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps(facts, indent=2))
    if facts["problems"]:
        print(f"error: not proved: {'; '.join(facts['problems'])}", file=sys.stderr)
        return 1
    share = facts["share_on_provider"]
    placed = "node placement not reported" if share is None else f"{share:.0%} of the nodes"
    print(f"proved: onnxruntime {facts['onnxruntime']} ran on {facts['provider']} ({placed}), agreeing with the CPU "
          "provider")
    return 0


if __name__ == "__main__":
    sys.exit(main())
