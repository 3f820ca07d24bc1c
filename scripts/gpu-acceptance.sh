#!/usr/bin/env bash
# One-command acceptance of m2vla's GPU path, without Node and without network (docs/cuda.md "Verifying a GPU"):
#
#   scripts/gpu-acceptance.sh <out-dir>          on a machine with an NVIDIA GPU, cmake, ninja, nvcc and a CUDA torch
#   scripts/gpu-acceptance.sh --cpu <out-dir>    the same checks in the same order on the CPU (CI runs this)
#
# It finds libtorch through `python3 -c 'import torch'` (else $LIBTORCH, else .libtorch/torch), configures its own
# build directory (CUDA for the present GPU's architecture only), builds with every core, then runs in order:
#   env           the machine, GPU, driver, toolkit and torch versions
#   configure, build
#   kernels       every self-check variant of every kernel (production and edge shapes) on the device
#   memcheck      compute-sanitizer memcheck over the same (GPU, where compute-sanitizer exists)
#   kernel-times  each CUDA kernel at production shapes against its libtorch equivalent (GPU)
#   ctest-cpu, ctest-cuda   the CTest labels
#   nccl, nccl-2proc        the trainer's NCCL process group on the GPU: one rank, then two processes on the one GPU
#                 (a skip saying so when NCCL refuses two ranks on one device)
#   run-dir       the full-size run directory (random bf16 weights, released layout; made by m2vla_bench make-run)
#   act           a first full-size act() whose kernel path must read `cuda-kernels`, then 20 timed acts
#   act-fallback  the same with the custom kernels forced off (libtorch ops)
#   act-batch2    batch 2
#   parity        fixture A against the golden outputs on the device (float32 and bfloat16)
#   train         5 training steps on the device (fixture A, bf16 autocast); the first loss must match the CPU's
#   eager-fixture bench/reference/eager.py against fixture A's reference outputs on the device (check_fixture.py)
#   eager         the PyTorch eager reference on the full-size run, same prompt length and dtype (python3 with torch
#                 suffices: without timm/transformers it runs bench/reference/torch_only.py)
# A failing check prints FAIL with its name and the reason, and the script carries on. <out-dir> gets summary.json
# (every check: status, seconds, reason; the bench numbers) and logs/<check>.log. Exit status: 0 when nothing failed.
# --cpu runs the act checks on fixture A (CI has no room for 3.3 GB) unless --full-size is given too.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu
FULL=
OUT=
for arg in "$@"; do
  case "$arg" in
    --cpu) MODE=cpu ;;
    --full-size) FULL=1 ;;
    -*) echo "gpu-acceptance: unknown option $arg" >&2; exit 2 ;;
    *) OUT=$arg ;;
  esac
done
[ -n "$OUT" ] || { echo "usage: scripts/gpu-acceptance.sh [--cpu] [--full-size] <out-dir>" >&2; exit 2; }
[ "$MODE" = gpu ] && FULL=1
mkdir -p "$OUT/logs"
OUT=$(cd "$OUT" && pwd)
LOGS=$OUT/logs
BUILD=${M2VLA_ACCEPTANCE_BUILD:-$ROOT/build-acceptance-$MODE}
RUNDIR=${M2VLA_FULLSIZE_DIR:-/tmp/m2vla-fullsize}
JOBS=$(nproc)
STARTED=$(date +%s)
RESULTS=$OUT/.results.tsv
: > "$RESULTS"
FAILED=0

# check <name> <timeout-seconds> <command...>: runs it with its output in logs/<name>.log; exit 77 = skipped, its
# last line the reason. The reason of a failure is the log's last line that is not empty.
check() {
  local name=$1 limit=$2
  shift 2
  local log=$LOGS/$name.log t0=$SECONDS status reason rc
  printf '%-14s ... ' "$name"
  if declare -F "$1" >/dev/null; then
    ( "$@" ) > "$log" 2>&1  # a function of this script (no timeout: it only reads the machine)
  else
    timeout --kill-after=10 "$limit" "$@" > "$log" 2>&1
  fi
  rc=$?
  reason=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | cut -c1-400)
  if [ $rc -eq 0 ]; then status=pass
  elif [ $rc -eq 77 ]; then status=skip
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=fail; reason="timed out after ${limit} s; last output: $reason"
  else status=fail; reason="exit $rc: $reason"
  fi
  [ $status = fail ] && FAILED=$((FAILED + 1))
  printf '%s (%d s)%s\n' "$status" $((SECONDS - t0)) "$([ $status = pass ] || echo ": $reason")"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" $((SECONDS - t0)) "$reason" >> "$RESULTS"
  return $rc
}

# ctest_all_ran <label>: CTest counts a test that exits 77 as "skipped", not failed; on the GPU machine a skipped cuda
# test (no usable device, a path not built) would read as a pass, so there a skip is a failure.
ctest_all_ran() {
  local out rc
  out=$(timeout --kill-after=10 300 ctest --test-dir "$BUILD" -L "$1" --output-on-failure 2>&1); rc=$?
  printf '%s\n' "$out"
  [ $rc -ne 0 ] && return $rc
  if grep -q '\*\*\*Skipped' <<<"$out"; then
    echo "a '$1' test skipped on the GPU machine (see its reason above): every one must run here"
    return 1
  fi
}

# skip_check <name> <reason>: a check that cannot run here.
skip_check() {
  printf '%-14s ... skip: %s\n' "$1" "$2"
  printf '%s\tskip\t0\t%s\n' "$1" "$2" >> "$RESULTS"
}

env_report() {
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -a)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x $(nproc)"
  echo "cpu flags (matrix): $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx512f|avx512_bf16|amx_bf16|amx_tile|avx2)$' | tr '\n' ' ')"
  echo "memory: $(free -g | awk '/Mem:/ {print $2 " GiB"}')"
  echo "cmake: $(cmake --version | head -n 1)"
  echo "ninja: $(ninja --version 2>/dev/null || echo none)"
  echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 1 || echo none)"
  echo "python3 torch: $(python3 -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -n 1)"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm --format=csv
  else
    echo "nvidia-smi: none"
  fi
  echo "libtorch: $TORCH_DIR"
  echo "cuda arch: ${ARCH:-none}"
  echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
}

# libtorch: the installed torch first (the GPU machine's CUDA torch), then $LIBTORCH, then the npm install's copy.
TORCH_DIR=
if PY_TORCH=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))' 2>/dev/null) &&
   [ -d "$PY_TORCH/share/cmake/Torch" ]; then
  TORCH_DIR=$PY_TORCH/share/cmake/Torch
elif [ -n "${LIBTORCH:-}" ] && [ -d "$LIBTORCH/share/cmake/Torch" ]; then
  TORCH_DIR=$LIBTORCH/share/cmake/Torch
elif [ -d "$ROOT/.libtorch/torch/share/cmake/Torch" ]; then
  TORCH_DIR=$ROOT/.libtorch/torch/share/cmake/Torch
fi
ARCH=
DEVICE=cpu
CMAKE_ARGS=(-DM2VLA_CUDA=OFF)
if [ $MODE = gpu ]; then
  DEVICE=cuda:0
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
  [ -n "$ARCH" ] || ARCH=$(python3 -c 'import torch; print("%d%d" % torch.cuda.get_device_capability(0))' 2>/dev/null)
  CMAKE_ARGS=(-DM2VLA_CUDA=ON "-DM2VLA_CUDA_ARCHS=${ARCH:-90}")
fi
command -v ccache >/dev/null && CMAKE_ARGS+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)

echo "m2vla GPU acceptance ($MODE mode) -> $OUT"
check env 30 env_report
if [ -z "$TORCH_DIR" ]; then
  skip_check configure "no libtorch: python3 cannot import torch, \$LIBTORCH is unset and there is no .libtorch/"
  FAILED=$((FAILED + 1))
else
  GEN=()
  command -v ninja >/dev/null && GEN=(-G Ninja)
  if check configure 120 cmake -S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release "-DTorch_DIR=$TORCH_DIR" \
       -DM2VLA_TESTS=ON "${CMAKE_ARGS[@]}"; then
    # The GPU window is 8 minutes; CI's CPU build runs on 2 cores, cold when ccache has nothing.
    BUILD_LIMIT=420
    [ $MODE = cpu ] && BUILD_LIMIT=1800
    check build $BUILD_LIMIT cmake --build "$BUILD" --parallel "$JOBS"
  fi
fi

BIN=$BUILD/native/tests
if [ -x "$BIN/kernels_test" ] && [ -x "$BIN/policy_test" ] && [ -x "$BIN/m2vla_bench" ]; then
  if [ $MODE = gpu ]; then
    check kernels 120 "$BIN/kernels_test" cuda_variants
    if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
      SAN=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
      check memcheck 150 "$SAN" --tool memcheck --error-exitcode 3 "$BIN/kernels_test" cuda_variants
    else
      skip_check memcheck "compute-sanitizer not found"
    fi
    check kernel-times 60 "$BIN/m2vla_bench" kernels --device "$DEVICE" --json "$OUT/kernels.json"
  else
    check kernels 120 "$BIN/kernels_test" every_mol_variant_has_the_kernel_layout \
      layout_rule_matches_the_views_of_the_head_projections check_passes_the_reference_and_catches_a_perturbed_one \
      top_r_reference_conventions
    skip_check memcheck "CPU mode: compute-sanitizer needs a GPU"
    skip_check kernel-times "CPU mode: the CUDA kernels need a GPU"
  fi
  check ctest-cpu 300 ctest --test-dir "$BUILD" -L cpu --output-on-failure
  if [ $MODE = gpu ]; then
    check ctest-cuda 300 ctest_all_ran cuda
    check nccl 120 "$BIN/distributed_test" collectives -- "$DEVICE" 1
    check nccl-2proc 120 "$BIN/distributed_test" collectives -- "$DEVICE" 2
  else
    skip_check ctest-cuda "CPU mode"
    skip_check nccl "CPU mode: NCCL needs a GPU (Gloo with two ranks runs in ctest-cpu: distributed.cpu)"
    skip_check nccl-2proc "CPU mode"
  fi

  ACT_DIR=$ROOT/test/fixtures/m2vla-tiny-a
  PROMPT=50
  if [ -n "$FULL" ]; then
    ACT_DIR=$RUNDIR
    if [ -f "$RUNDIR/model.safetensors" ] && [ -f "$RUNDIR/action_head.safetensors" ]; then
      skip_check run-dir "reusing $RUNDIR"
    else
      check run-dir 180 "$BIN/m2vla_bench" make-run "$RUNDIR"
    fi
  else
    PROMPT=12
    skip_check run-dir "CPU mode: acting on fixture A (pass --full-size for the 3.3 GB run)"
  fi
  act_check() {  # act_check <name> <bench options...>: m2vla_bench act on the run directory, numbers in <name>.json
    local name=$1
    shift
    check "$name" 180 "$BIN/m2vla_bench" act "$ACT_DIR" --device "$DEVICE" --prompt-len "$PROMPT" --json "$OUT/$name.json" "$@"
  }
  WANT=cpu-fused
  [ $MODE = gpu ] && WANT=cuda-kernels
  DTYPE=float32
  [ -n "$FULL" ] && DTYPE=bfloat16
  act_check act --iters 20 --dtype $DTYPE --expect-path "$WANT"
  act_check act-fallback --iters 10 --dtype $DTYPE --kernels off --graph off --expect-path libtorch-ops
  act_check act-batch2 --iters 10 --dtype $DTYPE --batch 2 --graph off --expect-path "$WANT"
  check parity 120 "$BIN/policy_test" -- "$DEVICE"
  check train 180 "$BIN/m2vla_bench" train "$ROOT/test/fixtures/m2vla-tiny-a" --device "$DEVICE" --steps 5 --bf16 on \
    --json "$OUT/train.json"
  if python3 -c 'import torch' >/dev/null 2>&1; then
    check eager-fixture 180 python3 "$ROOT/bench/reference/check_fixture.py" "$ROOT/test/fixtures/m2vla-tiny-a" --device "$DEVICE"
    if [ -n "$FULL" ]; then
      check eager 300 sh -c 'python3 "$0"/bench/reference/eager.py "$1" --mode policy --dtype bfloat16 --device "$2" --iters 10 \
        --threads "$3" --prompt-len "$4" | tee "$5"' "$ROOT" "$ACT_DIR" "$DEVICE" "$JOBS" "$PROMPT" "$OUT/eager.json"
    else
      skip_check eager "CPU mode: the eager reference runs on the full-size run (--full-size)"
    fi
  else
    skip_check eager-fixture "python3 cannot import torch"
    skip_check eager "python3 cannot import torch"
  fi
else
  for c in kernels memcheck kernel-times ctest-cpu ctest-cuda nccl nccl-2proc run-dir act act-fallback act-batch2 parity train \
           eager-fixture eager; do
    skip_check "$c" "not built (see configure/build)"
  done
fi

# summary.json: the checks in order and the bench numbers (python3 when it exists, else a plain writer).
python3 - "$OUT" "$MODE" $(( $(date +%s) - STARTED )) <<'EOF' || echo "gpu-acceptance: summary.json not written (python3 failed)"
import json, os, sys
out, mode, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
checks = []
for line in open(os.path.join(out, ".results.tsv")):
    name, status, secs, reason = (line.rstrip("\n").split("\t") + [""])[:4]
    checks.append({"check": name, "status": status, "seconds": int(secs), "reason": reason,
                   "log": f"logs/{name}.log"})
numbers = {}
for name in ("kernels", "act", "act-fallback", "act-batch2", "train", "eager"):
    path = os.path.join(out, f"{name}.json")
    if os.path.exists(path):
        try:
            numbers[name] = json.load(open(path))
        except ValueError as e:
            numbers[name] = {"error": str(e)}
# The same-run comparison: m2vla's act() (eager and CUDA graph) against the PyTorch eager reference, batch 1, the same
# run directory, dtype and prompt length.
act, eager = numbers.get("act", {}), numbers.get("eager", {})
if "p50_ms" in act and "p50_ms" in eager:
    graph = act.get("graph", {}).get("p50_ms") if isinstance(act.get("graph"), dict) else None
    numbers["comparison"] = {"m2vla_act_p50_ms": act["p50_ms"], "m2vla_graph_p50_ms": graph,
                             "pytorch_eager_p50_ms": eager["p50_ms"], "eager_impl": eager.get("impl"),
                             "speedup_vs_eager": eager["p50_ms"] / (graph or act["p50_ms"])}
env = open(os.path.join(out, "logs", "env.log")).read() if os.path.exists(os.path.join(out, "logs", "env.log")) else ""
summary = {"mode": mode, "seconds": seconds, "passed": sum(c["status"] == "pass" for c in checks),
           "failed": [c["check"] for c in checks if c["status"] == "fail"],
           "skipped": [c["check"] for c in checks if c["status"] == "skip"], "checks": checks, "numbers": numbers,
           "environment": env.splitlines()}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
EOF
rm -f "$RESULTS.tmp"
echo "gpu-acceptance: $FAILED failed, $(( $(date +%s) - STARTED )) s; summary: $OUT/summary.json"
[ $FAILED -eq 0 ]
