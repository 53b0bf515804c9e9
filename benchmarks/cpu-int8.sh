#!/usr/bin/env bash
# INT8 on a CPU, both forms, reproduced: speed (googlenet and v3, ONNX Runtime's CPU provider, fp32 vs TensorRT's int8
# form vs ONNX Runtime's CPU form, interleaved rounds) and accuracy (the digits googlenet of tests/digits.py, whose head
# was fitted on scikit-learn's digits, so that top-1 means something). Needs the dev install (scikit-learn).
#
#   bash benchmarks/cpu-int8.sh [OUT]      # OUT: default benchmarks/results/cpu-2core/int8
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/cpu-2core/int8}
work=$(mktemp -d -t inception-deploy-int8-XXXXXX)
trap 'rm -rf "$work"' EXIT
photos=$(python -c "import pathlib, sklearn.datasets; print(pathlib.Path(sklearn.datasets.__file__).parent / 'images')")

# Speed: untrained weights (speed does not depend on the values), calibrated on scikit-learn's two photographs.
for v in googlenet inception_v3; do
  inception-deploy export "$v" --int8 --int8-form tensorrt,cpu --calib "$photos" --dir "$work/export/$v"
done
inception-deploy bench --suite cpu-int8 --export-root "$work/export" --report "$out"

# Accuracy: the digits model, both forms calibrated on its calibration split, measured on its 200 eval images.
python - "$work/digits" <<'PY'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from digits import make_digits_model  # noqa: E402

made = make_digits_model(Path(sys.argv[1]))
(Path(sys.argv[1]) / "paths").write_text(f"{made.checkpoint}\n{made.calib}\n{made.eval}\n")
PY
{ read -r checkpoint; read -r calib; read -r eval; } < "$work/digits/paths"
inception-deploy export googlenet --weights "$checkpoint" --int8 --int8-form tensorrt,cpu --calib "$calib" \
  --dir "$work/digits/export"
inception-deploy accuracy googlenet --data "$eval" --dir "$work/digits/export" --precision fp32,int8,int8-cpu \
  --report "$out/accuracy-digits"
# The reports name the temporary folder this script made and removed: say so, and what reproduces them.
for report in "$out/README.md" "$out/accuracy-digits/accuracy.md"; do
  sed -i "1i > Made by \`bash benchmarks/cpu-int8.sh\`, which reproduces it: the paths below are its temporary folder, removed after the run.\n" "$report"
done
