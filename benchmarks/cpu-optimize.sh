#!/usr/bin/env bash
# `optimize` on a CPU, reproduced: the digits googlenet of tests/digits.py (a head fitted on scikit-learn's digits, so
# that top-1 means something), int8 calibrated on its calibration split and held to the default budget (1 point of
# top-1) on its 200 eval images; latency, then throughput up to batch 8, each within a 10-minute time budget, with the
# default measurement (3 interleaved rounds of 5 s after 2 s of warm-up). Needs the dev install (scikit-learn).
#
#   bash benchmarks/cpu-optimize.sh [OUT]      # OUT: default benchmarks/results/cpu-2core/optimize
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/cpu-2core/optimize}
work=$(mktemp -d -t inception-deploy-optimize-XXXXXX)
trap 'rm -rf "$work"' EXIT

python - "$work/digits" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from digits import make_digits_model  # noqa: E402

made = make_digits_model(Path(sys.argv[1]))
(Path(sys.argv[1]) / "paths").write_text(f"{made.checkpoint}\n{made.calib}\n{made.eval}\n")
PY
{ read -r checkpoint; read -r calib; read -r eval; } < "$work/digits/paths"
common=(--weights "$checkpoint" --eval "$eval" --calib "$calib" --dir "$work/export/googlenet" --time-budget 10m)
inception-deploy optimize v1 "${common[@]}" --objective latency --repo "$work/repo" --report "$out/latency"
inception-deploy optimize v1 "${common[@]}" --objective throughput --max-batch 8 --report "$out/throughput"
# The reports name the temporary folder this script made and removed: say so, and what reproduces them.
for report in "$out/latency/README.md" "$out/throughput/README.md"; do
  sed -i "1i > Made by \`bash benchmarks/cpu-optimize.sh\`, which reproduces it: the paths below are its temporary folder, removed after the run.\n" "$report"
done
