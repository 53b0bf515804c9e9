#!/usr/bin/env bash
# The GPU proof: the `gpu-core` suite, the `gpu` tests and ONNX Runtime CUDA, in one lease of the lent GPU
# (15 minutes of device time, at most 10 minutes and 64 MiB carried per call, bare after 30 s idle, no network).
#
#   benchmarks/gpu/proof.sh plan        the device calls, each with its carry, timeout_s and planned seconds
#   benchmarks/gpu/proof.sh prepare     here, once: download onnxruntime-gpu and onnxsim for the device's
#                                       Python 3.12, split them into .proof/part-1 .. part-5 (git-ignored, one
#                                       folder per call), check sums, print the calls
#   benchmarks/gpu/proof.sh call K [S]  on the device, K = 1..6 (7 continues a cut-short 6): stages part K,
#                                       does call K's work, writes what it measured under $OUT as it goes;
#                                       S: the call's real limit in seconds (default its planned timeout_s)
#   benchmarks/gpu/proof.sh rehearse    every call here, in a dry mode: fake parts, --device cpu, googlenet,
#                                       tiny windows; exits non-zero on any failure (tests/test_proof.py runs it)
#
# Call 1 carries onnxsim with the first part; calls 1-4 measure the torch rows and run the torch `gpu` tests
# while the parts arrive; call 5 joins the parts, installs onnxruntime-gpu, proves the CUDA provider is in use and
# measures googlenet's ONNX Runtime rows; call 6 measures v3's and writes the whole report with `bench --resume`,
# which keeps every row the earlier calls measured. benchmarks/README.md has the plan and what a run took.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/benchmarks/gpu"
PYTHON=${PYTHON:-python3}
PARTS=${PROOF_PARTS:-$root/.proof}              # the part folders; on the device they arrive in the tree
HOME_DIR=${PROOF_HOME:-/tmp/inception-proof}    # device state kept between back-to-back calls: stage, site, export, report
CACHE=${PROOF_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/inception-deploy-proof}
NPARTS=5
PART_LIMIT_MIB=60                               # a call carries 64 MiB in all, the working tree included
TREE_LIMIT_MIB=4
ORT_WHEEL="onnxruntime-gpu==1.31.1"
ONNXSIM_WHEEL="onnxsim==0.8.1"

if [[ -n "${PROOF_DRY:-}" ]]; then
    SUITE="$here/rehearsal.toml"; DEVICE=cpu
    EXPORTS="googlenet"; EXPORT_ARGS=()
    TORCH_BACKENDS="torch"; ORT_BACKEND="onnxruntime"
    SELECT_A=(googlenet --batch 1); SELECT_B=(googlenet --batch 2)
    PARITY_ARGS=(--backends onnxruntime --precision fp32 --samples 2)
    TORCH_TESTS=(-m gpu -k gpu_torch); OTHER_TESTS=(-m gpu -k "not gpu_torch")
else
    SUITE=gpu-core; DEVICE=cuda
    EXPORTS="googlenet inception_v3"; EXPORT_ARGS=(--fp16)
    TORCH_BACKENDS="torch,torch-compile"; ORT_BACKEND="onnxruntime-cuda"
    SELECT_A=(googlenet); SELECT_B=(inception_v3)
    PARITY_ARGS=(--backends torch-cuda --precision fp32,fp16)
    # tensorrt-rtx is not on the device (its wheels are far over a call's 64 MiB): its test module cannot load there.
    TORCH_TESTS=(-m gpu -k gpu_torch --ignore=tests/test_tensorrt_rtx.py)
    # every other `gpu` test, on googlenet (exporting every variant with int8 would take the lease; the bench's
    # rows check v3's parity on each GPU backend)
    OTHER_TESTS=(-m gpu -k "not gpu_torch and not inception_v2 and not inception_v3 and not inception_v4 and not inception_resnet_v2"
                 --ignore=tests/test_tensorrt_rtx.py)
fi

say() { printf '[proof %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'proof: %s\n' "$*" >&2; exit 2; }
idp() { "$PYTHON" -m inception_deploy "$@"; }
mib() { echo $(( ($(du -sb "$1" | cut -f1) + 1048575) / 1048576 )); }

# ---------------------------------------------------------------------------------------------- here
fake_wheels() {  # two small real wheels that pip installs: stand-ins for onnxsim and onnxruntime-gpu
    "$PYTHON" - "$1" <<'EOF'
import base64, hashlib, os, sys, zipfile
out = sys.argv[1]
def wheel(name, payload):
    path = os.path.join(out, f"{name}-0.1-py3-none-any.whl")
    files = {f"{name}/__init__.py": b"PROVED = True\n", f"{name}/payload.bin": payload,
             f"{name}-0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n".encode(),
             f"{name}-0.1.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: proof\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{k},sha256={base64.urlsafe_b64encode(hashlib.sha256(v).digest()).rstrip(b'=').decode()},{len(v)}\n"
                     for k, v in files.items()) + f"{name}-0.1.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for k, v in {**files, f"{name}-0.1.dist-info/RECORD": record.encode()}.items():
            z.writestr(k, v)
wheel("proof_fake_onnxsim", os.urandom(20_000))
wheel("proof_fake_onnxruntime_gpu", os.urandom(300_000))
EOF
}

prepare() {
    local wheels="$CACHE/wheels"
    rm -rf "$wheels" && mkdir -p "$wheels"
    if [[ "${1:-}" == "--fake" ]]; then
        fake_wheels "$wheels"
    else
        say "downloading $ORT_WHEEL and $ONNXSIM_WHEEL for CPython 3.12, manylinux x86-64"
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$wheels" "$ORT_WHEEL" "$ONNXSIM_WHEEL"
    fi
    local tool payload
    tool=$(ls "$wheels" | grep -iE '^(onnxsim|proof_fake_onnxsim)-' | head -1)
    payload=$(ls "$wheels" | grep -iE '^(onnxruntime_gpu|proof_fake_onnxruntime_gpu)-' | head -1)
    [[ -n "$tool" && -n "$payload" ]] || die "the download holds no onnxsim or onnxruntime-gpu wheel: see $wheels"
    rm -rf "$PARTS"/part-* && mkdir -p "$PARTS"  # a carried .proof/resume/ stays
    if git -C "$root" rev-parse --git-dir >/dev/null 2>&1 && [[ "$PARTS" == "$root"/* ]]; then
        git -C "$root" check-ignore -q "$PARTS/part-1" || die "$PARTS is not git-ignored: the parts would be committed"
    fi
    split -n "$NPARTS" -d -a 1 "$wheels/$payload" "$CACHE/chunk."
    for k in $(seq 1 "$NPARTS"); do
        mkdir -p "$PARTS/part-$k"
        mv "$CACHE/chunk.$((k - 1))" "$PARTS/part-$k/$payload.part$k"
        (cd "$wheels" && sha256sum "$payload") > "$PARTS/part-$k/PAYLOAD.sha256"  # the joined wheel's sum, in every part
    done
    cp "$wheels/$tool" "$PARTS/part-1/"
    # The tests' two photographs (scikit-learn's samples, their calibration set): the device has no scikit-learn.
    mkdir -p "$PARTS/part-1/images"
    "$PYTHON" -c 'import shutil, sys, sklearn.datasets as d, pathlib as p
for n in ("china.jpg", "flower.jpg"): shutil.copy(p.Path(d.__file__).parent / "images" / n, sys.argv[1])' "$PARTS/part-1/images" \
        || die "scikit-learn's sample photographs are needed for the device's tests: pip install -e '.[dev]'"
    for k in $(seq 1 "$NPARTS"); do
        (cd "$PARTS/part-$k" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)
        local size; size=$(mib "$PARTS/part-$k")
        (( size <= PART_LIMIT_MIB )) || die "part $k is $size MiB, over $PART_LIMIT_MIB: a call carries 64 MiB in all"
    done
    # What travels besides the part: tracked files and untracked ones git does not ignore.
    local tree; tree=$(cd "$root" && git ls-files -co --exclude-standard -z | { xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
    (( (tree + 1048575) / 1048576 <= TREE_LIMIT_MIB )) || die "the working tree is $(( (tree + 1048575) / 1048576 )) MiB: over $TREE_LIMIT_MIB it would crowd out the parts"
    say "prepared $NPARTS parts in $PARTS:"; du -sh "$PARTS"/part-* | sed 's/^/  /'
    plan
}

# Per call: what it carries, its timeout_s, and its planned seconds (estimates until a lease measures them).
CARRY=("" '[".proof/part-1"]' '[".proof/part-2"]' '[".proof/part-3"]' '[".proof/part-4"]' '[".proof/part-5"]' '[]' '[]')
TIMEOUT=(0 420 360 240 180 420 480 480)
PLANNED=(0 180 160 60 40 170 190 0)

plan() {
    local windows settings per_group total sum=0
    windows=$("$PYTHON" - "$SUITE" <<'EOF'
import sys
from inception_deploy.bench.plan import load_suite
from inception_deploy.runners import runner_class
plan = load_suite(sys.argv[1])
settings = sum(len(runner_class(b).candidates(b.device, p)) for b, p in plan.pairs() if b.engine != "tensorrt-rtx")
per_group = settings * plan.rounds * (plan.warmup_s + plan.duration_s)
print(f"{settings} {per_group:.0f} {per_group * len(plan.variants) * len(plan.batches):.0f}")
EOF
)
    read -r settings per_group total <<<"$windows"
    local does=("" "machine facts; onnxsim; export $EXPORTS ${EXPORT_ARGS[*]}; ${SELECT_A[*]}: torch eager + torch.compile rows"
        "${SELECT_B[*]}: torch eager + torch.compile rows"
        "the torch \`gpu\` tests (-k gpu_torch)"
        "\`inception-deploy parity\` ${PARITY_ARGS[*]}, each export"
        "join + check the parts, install onnxruntime-gpu, prove CUDAExecutionProvider; ${SELECT_A[*]}: ONNX Runtime rows"
        "${SELECT_B[*]}: ONNX Runtime rows, the whole report (bench --resume); the other \`gpu\` tests"
        "only if call 6 was cut short: bench --resume again, then the report")
    echo "The device calls, back to back (an idle machine is given back after 30 s, and /tmp with it)."
    echo "$SUITE: $settings settings per (variant, batch) group where TensorRT-RTX cannot run, $per_group s of windows"
    echo "each, $total s for the suite; torch.compile's compilations and ONNX Runtime's sessions come on top."
    echo
    printf '%-5s %-20s %-10s %-10s %s\n' call carry timeout_s planned_s does
    for k in 1 2 3 4 5 6 7; do
        printf '%-5s %-20s %-10s %-10s %s\n' "$k" "${CARRY[$k]}" "${TIMEOUT[$k]}" "${PLANNED[$k]}" "${does[$k]}"
        sum=$((sum + PLANNED[k]))
    done
    cat <<EOF

Planned: $sum s of commands, plus the machine's start (60-120 s) and six transfers of up to 64 MiB: about 15 minutes.
Each command is:   bash benchmarks/gpu/proof.sh call K S
with S = the call's timeout_s, or the device time left less 30 s where that is less. Every bench stops itself
(Ctrl-C, exit 130) 40 s before S runs out, counted from the call's start, and the tests 15 s before; what was
measured is in bench.jsonl and live.jsonl (appended as measured) and report.tar.
To continue an earlier lease's sweep: copy its returned bench.jsonl to .proof/resume/bench.jsonl and add
".proof/resume" to call 1's carry. After the last call, unpack the returned report.tar into
benchmarks/results/<gpu>/ and say which card gave it.
EOF
}

rehearse() {
    local tmp; tmp=$(mktemp -d)
    [[ -n "${PROOF_KEEP:-}" ]] || trap "rm -rf '$tmp'" EXIT; say "rehearsing in $tmp"
    export PROOF_DRY=1 PROOF_PARTS="$tmp/parts" PROOF_HOME="$tmp/device" PROOF_CACHE="$tmp/cache" PYTHON
    "$0" prepare --fake > "$tmp/prepare.log" || { cat "$tmp/prepare.log"; die "rehearsal: prepare failed"; }
    for k in 1 2 3 4 5 6; do
        mkdir -p "$tmp/out-$k"
        local t0=$SECONDS
        if ! OUT="$tmp/out-$k" "$0" call "$k" > "$tmp/call-$k.log" 2>&1; then
            tail -n 30 "$tmp/call-$k.log"; die "rehearsal: call $k failed (its log: above)"
        fi
        local files; files=$(find "$tmp/out-$k" -type f | wc -l)
        (( files <= 8 )) || die "rehearsal: call $k left $files files under \$OUT: at most 8 come back"
        [[ -s "$tmp/out-$k/call-$k.log" ]] || die "rehearsal: call $k wrote no log under \$OUT"
        say "call $k rehearsed in $((SECONDS - t0)) s"
    done
    "$PYTHON" - "$tmp" <<'EOF'
import json, sys, tarfile
from pathlib import Path
tmp = Path(sys.argv[1])
with tarfile.open(tmp / "out-6" / "report.tar") as tar:
    names = tar.getnames()
    records = json.load(tar.extractfile("bench.json"))["records"]
assert {"README.md", "bench.json", "bench.jsonl", "bench.csv"} <= set(names), names
ok = [r for r in records if r["status"] == "ok"]
torch_rows = [r for r in ok if r["backend"] == "torch"]
ort_rows = [r for r in ok if r["backend"] == "onnxruntime"]
assert len(records) == 4 and len(torch_rows) == 2 and len(ort_rows) == 2, records
runs = {r["resumed_from"] for r in ok}
# calls 1 and 2 lent the torch rows (batch 1, batch 2), call 5 onnxruntime's at batch 1; call 6 measured the rest
assert len(runs - {None}) == 3 and [r["batch"] for r in ok if r["resumed_from"] is None] == [2], runs
assert all(r["parity"] == "pass" for r in ok), [(r["backend"], r["parity"]) for r in ok]
print(f"rehearsal: the report joins rows of {len(runs)} runs")
EOF
    grep -q "proved: onnxruntime" "$tmp/out-5/call-5.log" || die "rehearsal: call 5 proved no provider"
    say "rehearsal passed: prepare + calls 1-6, in $SECONDS s"
}

# ---------------------------------------------------------------------------------------------- on the device
left() { echo $(( LIMIT - SECONDS )); }  # seconds this call has left (SECONDS counts from the call's start)

stage() {  # the part this call carried: checked, then kept where the next calls find it
    local k=$1 dir="$PARTS/part-$1"
    [[ -d "$dir" ]] || die "no $dir here: make this call with carry [\".proof/part-$k\"] (after \`proof.sh prepare\`)"
    (cd "$dir" && sha256sum --quiet -c SHA256SUMS) || die "part $k does not match its SHA256SUMS: prepare again"
    if [[ -f "$HOME_DIR/stage/PAYLOAD.sha256" ]] && ! cmp -s "$dir/PAYLOAD.sha256" "$HOME_DIR/stage/PAYLOAD.sha256"; then
        die "part $k comes from another \`proof.sh prepare\` than the parts before it: prepare once, then carry its parts"
    fi
    mkdir -p "$HOME_DIR/stage" && cp "$dir"/*.whl* "$dir/PAYLOAD.sha256" "$HOME_DIR/stage/"
    if [[ -d "$dir/images" ]]; then mkdir -p "$HOME_DIR/images" && cp "$dir"/images/* "$HOME_DIR/images/"; fi
    touch "$HOME_DIR/stage/call-$k.done"
    say "staged part $k"
}

still_warm() {  # call K needs what calls 1..K-1 left on this machine: a machine given back in between has none
    local k=$1 name
    (( k == 1 )) && return 0
    local before=$(( k >= 6 ? 5 : k - 1 ))  # call 7 follows a call 6 that may have been cut short
    [[ -f "$HOME_DIR/stage/call-$before.done" ]] || die "call $before's work is not on this machine: it was given back between calls (idle > 30 s); run the calls again from 1"
    if (( k >= 6 )); then
        name=$(awk '{print $2}' "$HOME_DIR/stage/PAYLOAD.sha256")
        [[ -f "$HOME_DIR/stage/$name.installed" ]] || die "onnxruntime-gpu is not installed here: call 5 did not finish; run it again"
    fi
}

install_tool() {
    local wheel; wheel=$(ls "$HOME_DIR"/stage/*.whl | head -1)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$HOME_DIR/site" "$wheel"
    say "installed $(basename "$wheel")"
}

join_install() {
    local name; name=$(awk '{print $2}' "$HOME_DIR/stage/PAYLOAD.sha256")
    for k in $(seq 1 "$NPARTS"); do
        [[ -f "$HOME_DIR/stage/$name.part$k" ]] || die "part $k is gone: the machine was given back between calls (idle > 30 s); run the calls again from 1"
    done
    for k in $(seq 1 "$NPARTS"); do cat "$HOME_DIR/stage/$name.part$k"; done > "$HOME_DIR/stage/$name"
    (cd "$HOME_DIR/stage" && sha256sum --quiet -c PAYLOAD.sha256) || die "the joined $name does not match its sha256"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target "$HOME_DIR/site" "$HOME_DIR/stage/$name"
    touch "$HOME_DIR/stage/$name.installed"
    say "installed $name (sha256 checked) into $HOME_DIR/site"
}

facts() {  # the machine, and the packages the proof needs (the device is bare: stop now if one is missing)
    { nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
      "$PYTHON" - <<'EOF'
import importlib, platform, sys
import torch
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version(), "| GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else None,
      "| capability", torch.cuda.get_device_capability() if torch.cuda.is_available() else None)
missing = []
for name in ("onnx", "onnxscript", "onnxruntime", "onnxsim", "numpy", "typer", "rich", "matplotlib", "PIL",
             "safetensors", "pytest", "torchvision", "timm", "tensorrt", "tensorrt_rtx"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "?"))
    except Exception as err:  # noqa: BLE001
        print(name, "missing:", type(err).__name__)
        missing += [name] if name not in ("tensorrt", "tensorrt_rtx") else []
if missing:
    sys.exit(f"proof: this machine lacks {', '.join(missing)}: carry their wheels with part 1 (proof.sh prepare NAME==VERSION)")
EOF
    } | tee "$OUT/machine.txt"
    return "${PIPESTATUS[0]}"
}

exports() {
    for variant in $EXPORTS; do
        if [[ -f "$HOME_DIR/export/$variant/manifest.json" ]]; then say "$variant: exported already"; continue; fi
        idp export "$variant" "${EXPORT_ARGS[@]}" --out "$HOME_DIR/export/$variant"
    done
}

seed_log() {  # an earlier lease's log, carried in .proof/resume, continues here if it was measured on this kind of machine
    [[ -f "$PARTS/resume/bench.jsonl" && ! -f "$HOME_DIR/report/bench.jsonl" ]] || return 0
    if "$PYTHON" - "$PARTS/resume/bench.jsonl" "$SUITE" "$DEVICE" <<'EOF'
import sys
from inception_deploy.bench.environment import environment
from inception_deploy.bench.log import resumable_groups
from inception_deploy.bench.plan import load_suite
from inception_deploy.core.errors import InputError
plan = {**load_suite(sys.argv[2]).to_dict(), "device": sys.argv[3], "check_parity": True}
try:
    groups, runs, _ = resumable_groups(sys.argv[1], environment(sys.argv[3]), plan)
except InputError as err:
    sys.exit(f"not continuing the carried bench.jsonl: {err}")
print(f"continuing the carried bench.jsonl: {len(runs)} run(s) fit this machine")
EOF
    then cp "$PARTS/resume/bench.jsonl" "$HOME_DIR/report/bench.jsonl"; fi
}

bench() {  # bench ARGS...: the suite, resumed from the log this lease (or a carried one) has so far
    local rc=0 limit; limit=$(( $(left) - 40 ))
    (( limit > 30 )) || { say "no time left for a bench in this call ($(left) s): the next call resumes"; return 1; }
    # The report of this run only: an earlier call's must not come back as this one's.
    find "$HOME_DIR/report" -mindepth 1 -maxdepth 1 ! -name bench.jsonl -exec rm -rf {} +
    timeout -s INT -k 20 "$limit" "$PYTHON" -m inception_deploy bench "$@" --suite "$SUITE" --device "$DEVICE" \
        --check-parity --export-root "$HOME_DIR/export" --report "$HOME_DIR/report" --json "$OUT/live.json" --resume || rc=$?
    pack_report
    case $rc in
        0) ;;
        124|130) say "bench stopped itself before the call's limit: its rows are in bench.jsonl; the next call resumes"
                 return 1 ;;
        *) say "bench exited $rc"; return "$rc" ;;
    esac
}

tests() {  # the `gpu` tests named, in the time left; their whole output goes back as pytest-K.log
    local rc=0 log="$OUT/pytest-$CALL.log" limit; limit=$(( $(left) - 15 ))
    (( limit > 30 )) || { say "no time left for the tests in this call ($(left) s)"; return 1; }
    (cd "$root" && INCEPTION_DEPLOY_TEST_IMAGES="$HOME_DIR/images" timeout -k 10 "$limit" "$PYTHON" -m pytest -q -rA \
        -p no:cacheprovider "$@" > "$log" 2>&1) || rc=$?
    tail -n 40 "$log"
    return $rc
}

pack_report() {  # the report this call's bench wrote, as one file; and the whole log so far
    cp "$HOME_DIR/report/bench.jsonl" "$OUT/bench.jsonl" 2>/dev/null || true
    if [[ -f "$HOME_DIR/report/README.md" ]]; then
        (cd "$HOME_DIR/report" && tar -cf "$OUT/report.tar" -- *) && say "report.tar: $(tar -tf "$OUT/report.tar" | tr '\n' ' ')"
    fi
}

call() {
    local k=${1:?call number}
    [[ "$k" =~ ^[1-7]$ ]] || die "call K takes 1..7, not '$k'"
    CALL=$k
    LIMIT=${2:-${TIMEOUT[$k]}}  # the call's real limit: its timeout_s, or less where less device time is left
    [[ "$LIMIT" =~ ^[0-9]+$ ]] || die "call K [LIMIT_S]: LIMIT_S is whole seconds, not '$LIMIT'"
    OUT=${OUT:-$HOME_DIR/out}
    mkdir -p "$OUT" "$HOME_DIR"/{stage,site,export,report}
    exec > >(tee -a "$OUT/call-$k.log") 2>&1
    trap 'cp "$HOME_DIR/report/bench.jsonl" "$OUT/bench.jsonl" 2>/dev/null || true' EXIT
    export PYTHONPATH="$HOME_DIR/site:$root${PYTHONPATH:+:$PYTHONPATH}" INCEPTION_DEPLOY_PROGRESS=lines PYTHONUNBUFFERED=1
    say "call $k on $(hostname), $PYTHON $("$PYTHON" -c 'import platform; print(platform.python_version())'), ${LIMIT} s"
    still_warm "$k"
    case $k in
        1) stage 1; install_tool; facts; seed_log; exports; bench "${SELECT_A[@]}" --backends "$TORCH_BACKENDS" ;;
        2) stage 2; exports; bench "${SELECT_B[@]}" --backends "$TORCH_BACKENDS" ;;
        3) stage 3; tests "${TORCH_TESTS[@]}" ;;
        4) stage 4; exports
           for variant in $EXPORTS; do idp parity "$variant" --dir "$HOME_DIR/export/$variant" "${PARITY_ARGS[@]}"; done ;;
        5) stage 5; join_install
           if [[ -n "${PROOF_DRY:-}" ]]; then
               "$PYTHON" -c 'import proof_fake_onnxruntime_gpu as m; assert m.PROVED; print("imported", m.__file__)'
           fi
           "$PYTHON" "$here/prove_ort.py" "$HOME_DIR/export/googlenet" --device "$DEVICE" --json "$OUT/ort-proof.json"
           bench "${SELECT_A[@]}" ;;
        6) local failed=0
           bench || failed=1
           tests "${OTHER_TESTS[@]}" || failed=1
           (( failed == 0 )) ;;
        7) bench ;;
    esac
    touch "$HOME_DIR/stage/call-$k.done"
    say "call $k done in $SECONDS s"
}

case "${1:-}" in
    plan) plan ;;
    prepare) shift; prepare "$@" ;;
    call) shift; call "$@" ;;
    rehearse) rehearse ;;
    *) sed -n '2,18p' "$0"; exit 2 ;;
esac
