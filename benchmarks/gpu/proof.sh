#!/usr/bin/env bash
# The GPU proof, planned so that a lease of the lent GPU (15 minutes of device time, at most 10 minutes and 64 MiB
# carried per call, bare after 30 s idle, no network) yields the important figures first, in about 11 minutes:
#   1. ONNX Runtime CUDA fp16, googlenet and v3, batch 1 and 256 (call 4, once onnxruntime-gpu has arrived);
#   2. torch.compile fp16 for the same (calls 2 and 3, while the wheel's parts arrive);
#   3. the A/B that tests the cause of the slow first ONNX Runtime figures: use_tf32 left out vs "0" (call 4);
#   4. then fp32 and torch eager (call 5), batch 32 (call 6) and the `gpu` tests (call 7), as far as the lease goes.
#
#   benchmarks/gpu/proof.sh plan        the device calls, each with its carry, timeout_s and planned seconds
#   benchmarks/gpu/proof.sh prepare     here, once: download onnxruntime-gpu and onnxsim for the device's Python
#                                       3.12, pack them with xz (gpu/wheelpack.py), split onnxruntime-gpu into
#                                       .proof/part-1 .. part-4 (git-ignored, one folder per call), check sums
#   benchmarks/gpu/proof.sh call K [S]  on the device, K = 1..7: stages part K, does call K's work, writes what it
#                                       measures under $OUT as it goes; S: the call's real limit in seconds
#                                       (default its timeout_s). Calls 5 to 7 may be repeated: they resume.
#   benchmarks/gpu/proof.sh rehearse    every call here, in a dry mode: fake parts, --device cpu, googlenet, tiny
#                                       windows; exits non-zero on any failure (tests/test_proof.py runs it)
#
# Every call's bench runs with --resume: each keeps the rows the calls before it measured, and call 5 writes the
# report of all of them (call 6 again with batch 32). benchmarks/README.md has the plan and what a lease took.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
here="$root/benchmarks/gpu"
PYTHON=${PYTHON:-python3}
PARTS=${PROOF_PARTS:-$root/.proof}              # the part folders; on the device they arrive in the tree
HOME_DIR=${PROOF_HOME:-/tmp/inception-proof}    # device state kept between back-to-back calls: stage, site, export, report
CACHE=${PROOF_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/inception-deploy-proof}
NPARTS=4
CARRY_LIMIT_MIB=62                              # a call carries 64 MiB in all: its part and the working tree
ORT_WHEEL="onnxruntime-gpu==1.31.1"
ONNXSIM_WHEEL="onnxsim==0.8.1"

if [[ -n "${PROOF_DRY:-}" ]]; then
    SUITE="$here/rehearsal.toml"; DEVICE=cpu
    EXPORTS="googlenet"; EXPORT_ARGS=()
    SEL2=(googlenet --backends torch --batch 1); SEL3=(googlenet --backends torch --batch 2)
    SEL4=(googlenet --backends onnxruntime --batch 1); SEL5=(--batch 1,2)
    AB_ARGS=(--device cpu --precision fp32 --batch 1 --rounds 1 --window-s 0.05)
    TESTS=(-m gpu --ignore=tests/test_tensorrt_rtx.py)
else
    SUITE=gpu-core; DEVICE=cuda
    EXPORTS="googlenet inception_v3"; EXPORT_ARGS=(--fp16 --fp16-io)  # fp16 rows fed fp16, as torch's are
    SEL2=(googlenet --backends torch-compile --precision fp16 --batch 1,256)
    SEL3=(inception_v3 --backends torch-compile --precision fp16 --batch 1,256)
    SEL4=(googlenet inception_v3 --backends onnxruntime-cuda --precision fp16 --batch 1,256)
    SEL5=(--batch 1,256)
    AB_ARGS=(--device cuda --precision fp16 --batch 1,256 --rounds 2 --window-s 0.4)
    # every `gpu` test on googlenet (exporting every variant would take the lease; the bench's rows check v3's parity
    # on each GPU backend); tensorrt-rtx is not on the device (its wheels are far over a call's 64 MiB)
    TESTS=(-m gpu -k "not inception_v2 and not inception_v3 and not inception_v4 and not inception_resnet_v2"
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
    local wheels="$CACHE/wheels" packs="$CACHE/packs"
    rm -rf "$wheels" && mkdir -p "$wheels" "$packs"
    if [[ "${1:-}" == "--fake" ]]; then
        fake_wheels "$wheels"
    else
        say "downloading $ORT_WHEEL and $ONNXSIM_WHEEL for CPython 3.12, manylinux x86-64"
        "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 -d "$wheels" "$ORT_WHEEL" "$ONNXSIM_WHEEL"
    fi
    local tool payload
    tool=$(ls "$wheels" | grep -iE '^(onnxsim|proof_fake_onnxsim)-' | head -1 || true)
    payload=$(ls "$wheels" | grep -iE '^(onnxruntime_gpu|proof_fake_onnxruntime_gpu)-' | head -1 || true)
    [[ -n "$tool" && -n "$payload" ]] || die "the download holds no onnxsim or onnxruntime-gpu wheel: see $wheels"
    # Each wheel's files as an xz tar (about 2 minutes for onnxruntime-gpu on 2 cores: kept, by the wheel's sha256).
    local wheel sum
    for wheel in "$tool" "$payload"; do
        sum=$(sha256sum "$wheels/$wheel" | cut -c1-16)
        if [[ ! -f "$packs/$sum.tar.xz" ]]; then
            say "packing $wheel with xz -9"
            "$PYTHON" "$here/wheelpack.py" pack "$wheels/$wheel" "$packs/$sum.tar.xz" >/dev/null \
                || die "could not pack $wheel"
        fi
        cp "$packs/$sum.tar.xz" "$CACHE/$wheel.tar.xz"
    done
    rm -rf "$PARTS"/part-* && mkdir -p "$PARTS"  # a carried .proof/resume/ stays
    if git -C "$root" rev-parse --git-dir >/dev/null 2>&1 && [[ "$PARTS" == "$root"/* ]]; then
        git -C "$root" check-ignore -q "$PARTS/part-1" || die "$PARTS is not git-ignored: the parts would be committed"
    fi
    split -n "$NPARTS" -d -a 1 "$CACHE/$payload.tar.xz" "$CACHE/chunk."
    for k in $(seq 1 "$NPARTS"); do
        mkdir -p "$PARTS/part-$k"
        mv "$CACHE/chunk.$((k - 1))" "$PARTS/part-$k/$payload.tar.xz.part$k"
        (cd "$CACHE" && sha256sum "$payload.tar.xz") > "$PARTS/part-$k/PAYLOAD.sha256"  # the joined pack's, in each
    done
    mv "$CACHE/$tool.tar.xz" "$PARTS/part-1/"
    rm -f "$CACHE/$payload.tar.xz"
    # The tests' two photographs (scikit-learn's samples, their calibration set): the device has no scikit-learn.
    mkdir -p "$PARTS/part-1/images"
    "$PYTHON" -c 'import shutil, sys, sklearn.datasets as d, pathlib as p
for n in ("china.jpg", "flower.jpg"): shutil.copy(p.Path(d.__file__).parent / "images" / n, sys.argv[1])' "$PARTS/part-1/images" \
        || die "scikit-learn's sample photographs are needed for the device's tests: pip install -e '.[dev]'"
    # What travels besides the part: tracked files and untracked ones git does not ignore.
    local tree bytes
    tree=$(cd "$root" && git ls-files -co --exclude-standard -z | { xargs -0 stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
    for k in $(seq 1 "$NPARTS"); do
        (cd "$PARTS/part-$k" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS)
        bytes=$(( $(du -sb "$PARTS/part-$k" | cut -f1) + tree ))
        (( bytes <= CARRY_LIMIT_MIB * 1048576 )) \
            || die "part $k and the working tree are $(( (bytes + 1048575) / 1048576 )) MiB, over $CARRY_LIMIT_MIB: a call carries 64 MiB in all"
    done
    say "prepared $NPARTS parts in $PARTS (the working tree adds $(( (tree + 1048575) / 1048576 )) MiB to each call):"
    du -sh "$PARTS"/part-* | sed 's/^/  /'
    plan
}

# Per call: what it carries, its timeout_s, and its planned seconds: estimates from the H200 lease of 2026-11-27 (its
# call 1, exports and googlenet's torch rows: 233 s; its call 5, install, proof and 48 ONNX Runtime sessions: 157 s),
# until a lease measures them. Calls 6 and 7 have no plan: they use what the lease has left.
CARRY=("" '[".proof/part-1"]' '[".proof/part-2"]' '[".proof/part-3"]' '[".proof/part-4"]' '[]' '[]' '[]')
TIMEOUT=(0 180 180 240 300 300 480 300)
PLANNED=(0 60 65 110 175 95 0 0)
NEEDS=(0 0 1 2 3 4 4 4)    # the call whose work (on this machine) each call builds on
START_S=120                # the machine's start
TRANSFER_S=7               # one call's transfer of up to 64 MiB, guessed

plan() {
    local windows settings per_group
    "$PYTHON" -c 'import inception_deploy.bench.plan' 2>/dev/null \
        || die "$PYTHON cannot import inception_deploy: run from the project's virtualenv (pip install -e '.[dev]'), or name one with PYTHON=..."
    windows=$("$PYTHON" - "$SUITE" <<'EOF'
import sys
from inception_deploy.bench.plan import load_suite
from inception_deploy.runners import runner_class
plan = load_suite(sys.argv[1])
settings = sum(len(runner_class(b).candidates(b, p)) for b, p in plan.pairs() if b.engine != "tensorrt-rtx")
print(settings, f"{settings * plan.rounds * (plan.warmup_s + plan.duration_s):.0f}")
EOF
)
    read -r settings per_group <<<"$windows"
    local does=(""
        "machine facts; install onnxsim (its RECORD checked); export $EXPORTS ${EXPORT_ARGS[*]}, side by side"
        "priority 2: bench ${SEL2[*]}"
        "priority 2: bench ${SEL3[*]}"
        "join + check the parts, install onnxruntime-gpu, prove CUDAExecutionProvider; priority 1: bench ${SEL4[*]}; priority 3: the use_tf32 A/B (gpu/ab_tf32.py ${AB_ARGS[*]})"
        "priority 4: bench ${SEL5[*]} (the suite's other rows: fp32, torch eager), the report of every row so far"
        "bench: the whole suite (batch 32 too) and its report; again if cut short"
        "the \`gpu\` tests (googlenet): pytest-7.log")
    echo "The device calls, back to back (an idle machine is given back after 30 s, and /tmp with it)."
    echo "$SUITE: $settings settings per (variant, batch) group where TensorRT-RTX cannot run (sm90), $per_group s of"
    echo "windows each; torch.compile's compilations and ONNX Runtime's sessions come on top."
    echo
    printf '%-5s %-20s %-10s %-10s %s\n' call carry timeout_s planned_s does
    local k sum=0 calls=0
    for k in 1 2 3 4 5 6 7; do
        printf '%-5s %-20s %-10s %-10s %s\n' "$k" "${CARRY[$k]}" "${TIMEOUT[$k]}" "${PLANNED[$k]}" "${does[$k]}"
        if (( PLANNED[k] > 0 )); then sum=$((sum + PLANNED[k])); calls=$((calls + 1)); fi
    done
    local total=$(( START_S + calls * TRANSFER_S + sum ))
    cat <<EOF

Planned, calls 1-5: $sum s of commands + the machine's start (~$START_S s) + $calls transfers (~$TRANSFER_S s each)
= $total s of the lease's 900. Calls 6 and 7 use what is left; a later lease continues (.proof/resume, below).
Each command is:   bash benchmarks/gpu/proof.sh call K S
with S = the call's timeout_s, or the device time left less 30 s where that is less. Every bench stops itself
(Ctrl-C, exit 130) 25 s before S runs out, counted from the call's start, the A/B and the tests 15 s before. What was
measured is in live.jsonl (appended as measured), bench.jsonl, report.tar and the A/B's ab-tf32.json.
To continue an earlier lease's sweep: copy its returned bench.jsonl to .proof/resume/bench.jsonl and add
".proof/resume" to call 1's carry (it is used only if this code measured it on the same kind of machine).
After the last call, unpack the returned report.tar into benchmarks/results/<gpu>/ and say which card gave it.
EOF
}

rehearse() {
    local tmp; tmp=$(mktemp -d)
    [[ -n "${PROOF_KEEP:-}" ]] || trap "rm -rf '$tmp'" EXIT; say "rehearsing in $tmp"
    export PROOF_DRY=1 PROOF_PARTS="$tmp/parts" PROOF_HOME="$tmp/device" PROOF_CACHE="$tmp/cache" PYTHON
    "$0" prepare --fake > "$tmp/prepare.log" || { cat "$tmp/prepare.log"; die "rehearsal: prepare failed"; }
    local k t0 files
    for k in 1 2 3 4 5 6 7; do
        mkdir -p "$tmp/out-$k"
        t0=$SECONDS
        if ! OUT="$tmp/out-$k" "$0" call "$k" > "$tmp/call-$k.log" 2>&1; then
            tail -n 30 "$tmp/call-$k.log"; die "rehearsal: call $k failed (its log: above)"
        fi
        files=$(find "$tmp/out-$k" -type f | wc -l)
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
assert len(records) == 6 and len(ok) == 6, [(r["backend"], r["batch"], r["status"], r["reason"]) for r in records]
run = {(r["backend"], r["batch"]): r["resumed_from"] for r in ok}
# calls 2 and 3 measured torch at batch 1 and 2, call 4 onnxruntime at batch 1, call 5 onnxruntime at batch 2; call 6
# measured batch 3 and kept the rest
earlier = [run[k] for k in (("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2))]
assert None not in earlier and len(set(earlier)) == 4 and run[("torch", 3)] is run[("onnxruntime", 3)] is None, run
assert all(r["parity"] == "pass" for r in ok), [(r["backend"], r["parity"]) for r in ok]
assert all(r["candidates"] for r in ok), "every row lists the candidates it measured"
ab = json.loads((tmp / "out-4" / "ab-tf32.json").read_text())
assert len(ab["measured"]) == 4 and len(ab["kernels"]) == 4 and len(ab["verdicts"]) == 2, ab
tests = (tmp / "out-7" / "pytest-7.log").read_text()
print(f"rehearsal: the report joins rows of 5 runs; the A/B made {len(ab['measured'])} measurements; the tests: "
      f"{tests.strip().splitlines()[-1]}")
EOF
    grep -q "proved: onnxruntime" "$tmp/out-4/call-4.log" || die "rehearsal: call 4 proved no provider"
    grep -q "files match the wheel's RECORD" "$tmp/out-4/call-4.log" || die "rehearsal: call 4 checked no RECORD"
    say "rehearsal passed: prepare + calls 1-7, in $SECONDS s"
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
    mkdir -p "$HOME_DIR/stage" && cp "$dir"/*.tar.xz* "$dir/PAYLOAD.sha256" "$HOME_DIR/stage/"
    if [[ -d "$dir/images" ]]; then mkdir -p "$HOME_DIR/images" && cp "$dir"/images/* "$HOME_DIR/images/"; fi
    say "staged part $k"
}

still_warm() {  # call K needs what the calls before it left on this machine: a machine given back in between has none
    local k=$1 before=${NEEDS[$1]}
    (( before == 0 )) && return 0
    [[ -f "$HOME_DIR/stage/call-$before.done" ]] || die "call $before's work is not on this machine: it was given back between calls (idle > 30 s); run the calls again from 1"
}

install_tool() {  # onnxsim, from part 1 (onnxruntime-gpu's pack is still in parts here)
    local pack; pack=$(ls "$HOME_DIR"/stage/*.whl.tar.xz | head -1)
    "$PYTHON" "$here/wheelpack.py" install "$pack" "$HOME_DIR/site" || die "onnxsim's pack does not install: prepare again"
}

join_install() {  # onnxruntime-gpu, from parts 1-4
    local name; name=$(awk '{print $2}' "$HOME_DIR/stage/PAYLOAD.sha256")
    for k in $(seq 1 "$NPARTS"); do
        [[ -f "$HOME_DIR/stage/$name.part$k" ]] || die "part $k is gone: the machine was given back between calls (idle > 30 s); run the calls again from 1"
    done
    for k in $(seq 1 "$NPARTS"); do cat "$HOME_DIR/stage/$name.part$k"; done > "$HOME_DIR/stage/$name"
    (cd "$HOME_DIR/stage" && sha256sum --quiet -c PAYLOAD.sha256) || die "the joined $name does not match its sha256"
    "$PYTHON" "$here/wheelpack.py" install "$HOME_DIR/stage/$name" "$HOME_DIR/site" || die "$name does not install"
    rm -f "$HOME_DIR/stage/$name"*.part*
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

exports() {  # side by side: nothing is timed while they run
    local variant pids=() failed=0
    for variant in $EXPORTS; do
        if [[ -f "$HOME_DIR/export/$variant/manifest.json" ]]; then say "$variant: exported already"; continue; fi
        idp export "$variant" "${EXPORT_ARGS[@]}" --dir "$HOME_DIR/export/$variant" > "$HOME_DIR/export-$variant.log" 2>&1 &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    for variant in $EXPORTS; do [[ -f "$HOME_DIR/export-$variant.log" ]] && tail -n 3 "$HOME_DIR/export-$variant.log"; done
    (( failed == 0 )) || die "an export failed (its log: above)"
}

seed_log() {  # an earlier lease's log, carried in .proof/resume, continues here if this code measured it on this kind of machine
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
    local rc=0 limit; limit=$(( $(left) - 25 ))
    (( limit > 20 )) || { say "no time left for a bench in this call ($(left) s): the next call resumes"; return 1; }
    # The report of this run only: an earlier call's must not come back as this one's.
    find "$HOME_DIR/report" -mindepth 1 -maxdepth 1 ! -name bench.jsonl -exec rm -rf {} +
    timeout -s INT -k 15 "$limit" "$PYTHON" -m inception_deploy bench "$@" --suite "$SUITE" --device "$DEVICE" \
        --check-parity --export-root "$HOME_DIR/export" --report "$HOME_DIR/report" --json "$OUT/live.json" --resume || rc=$?
    pack_report
    case $rc in
        0) ;;
        124|130) say "bench stopped itself before the call's limit: its rows are in bench.jsonl; the next call resumes"
                 return 1 ;;
        *) say "bench exited $rc"; return "$rc" ;;
    esac
}

ab() {  # the use_tf32 A/B, in the time left; its JSON is rewritten after every measurement
    local limit; limit=$(( $(left) - 15 ))
    (( limit > 20 )) || { say "no time left for the A/B in this call ($(left) s)"; return 1; }
    local dirs=(); for variant in $EXPORTS; do dirs+=("$HOME_DIR/export/$variant"); done
    timeout -s INT -k 10 "$limit" "$PYTHON" "$here/ab_tf32.py" "${dirs[@]}" "${AB_ARGS[@]}" --json "$OUT/ab-tf32.json"
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
    local k=${1:-}
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
    local failed=0
    case $k in
        1) stage 1; install_tool; facts; seed_log; exports ;;
        2) stage 2; bench "${SEL2[@]}" || failed=1 ;;
        3) stage 3; bench "${SEL3[@]}" || failed=1 ;;
        4) stage 4; join_install
           if [[ -n "${PROOF_DRY:-}" ]]; then
               "$PYTHON" -c 'import proof_fake_onnxruntime_gpu as m; assert m.PROVED; print("imported", m.__file__)'
           fi
           "$PYTHON" "$here/prove_ort.py" "$HOME_DIR/export/googlenet" --device "$DEVICE" --json "$OUT/ort-proof.json"
           bench "${SEL4[@]}" || failed=1
           ab || failed=1 ;;
        5) bench "${SEL5[@]}" || failed=1 ;;
        6) bench || failed=1 ;;
        7) tests "${TESTS[@]}" || failed=1 ;;
    esac
    touch "$HOME_DIR/stage/call-$k.done"  # what the next calls build on is here, even where this call's bench was cut
    say "call $k done in $SECONDS s"
    return "$failed"
}

case "${1:-}" in
    plan) plan ;;
    prepare) shift; prepare "$@" ;;
    call) shift; call "$@" ;;
    rehearse) rehearse ;;
    *) sed -n '2,22p' "$0"; exit 2 ;;
esac
