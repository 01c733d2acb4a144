#!/usr/bin/env bash
# Runs on the GPU machine (the device tool: carry [".dev"], built by scripts/device/build.sh),
# in one go, everything that needs the GPU; results land in $OUT (or ./.dev/out):
#   1. the CUDA hardware tests: the op harness, every golden folder at f32 tolerances, the
#      DiT and text encoder in bf16, the tiny pipeline in bf16
#   2. vidrt bench, kernel suite at the real 1.3B shapes in bf16 on CUDA (kernels' device time
#      by CUDA events), and the model suite (bench_bf16.{json,md,svg})
#   3. the PyTorch peer at the same names, shapes, dtype and timing (torch_bf16.json), and the
#      ratio table (compare_bf16.md)
# Every log goes to $OUT/log.txt (the device tool brings back at most 8 files); each step's
# exit status is reported there; a failing step does not stop the next, and the script exits
# with the last non-zero status (0 only when every step passed).
# Budget: sized for about 8 minutes on an H100/H200; set BENCH_SCALE=2 to halve the shapes.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/.dev/out}"
mkdir -p "$OUT"
export VIDRT_GOLDEN="$PWD/.dev/golden" PYTHONUNBUFFERED=1
scale="${BENCH_SCALE:-1}"
log="$OUT/log.txt"
worst=0
status() {
  echo "run.sh: $1 exited $2" | tee -a "$log"
  if [ "$2" -ne 0 ]; then worst=$2; fi
}
step() { echo "=== $1" >> "$log"; }
step nvidia-smi; nvidia-smi >> "$log" 2>&1
step "cuda tests"
timeout 240 .dev/bin/cuda_backend --include-ignored --test-threads 1 >> "$log" 2>&1
status "cuda tests" $?
step "vidrt bench"
timeout 240 .dev/bin/vidrt bench --backend cuda --precision bf16 --suite all --scale "$scale" --repeats 5 --warmup 2 \
  --json "$OUT/bench_bf16.json" --markdown "$OUT/bench_bf16.md" --plot "$OUT/bench_bf16.svg" >> "$log" 2>&1
status "vidrt bench" $?
if [ -f "$OUT/bench_bf16.json" ]; then
  step "torch peer"
  timeout 120 python3 benches/peers/torch_peer.py --from "$OUT/bench_bf16.json" --json "$OUT/torch_bf16.json" \
    >> "$log" 2>&1
  status "torch peer" $?
  .dev/bin/vidrt bench --compare "$OUT/bench_bf16.json" "$OUT/torch_bf16.json" > "$OUT/compare_bf16.md" 2>&1
  status "compare" $?
fi
grep -E "^test |test result|SKIP|worst|rel_l2|run.sh:" "$log" | tail -n 40
head -n 60 "$OUT/compare_bf16.md" 2>/dev/null
exit "$worst"
