#!/usr/bin/env bash
# Runs on the GPU machine (the device tool: carry [".dev", ".gl"], built by scripts/device/build.sh),
# in one go, everything that needs the GPU; results land in $OUT (or ./.dev/out):
#   1. the CUDA hardware tests: the op harness, every golden folder at f32 tolerances, the
#      DiT and text encoder in bf16, the tiny pipeline in bf16; on Hopper, the harness and the
#      bf16 forwards again with the wgmma GEMM and attention (VIDRT_CUDA_WGMMA=1; opt-in until they pass)
#   2. vidrt bench, kernel suite at the real 1.3B shapes in bf16 on CUDA (kernels' device time
#      by CUDA events), and the model suite (bench_bf16.{json,md,svg})
#   0. (before the bench) vidrt tune on CUDA at the 1.3B DiT shapes into $OUT/tune_cuda.json, so
#      the bench is a tuned run (issue 8)
#   3. the PyTorch peer at the same names, shapes, dtype and timing (torch_bf16.json), and the
#      ratio table (compare_bf16.md)
#   4. if time is left and a Vulkan loader was carried (.gl, see the device README), the wgpu
#      backend on the GPU's Vulkan adapter: the op harness (`vidrt ops`) and the kernel bench in
#      f16 (bench_wgpu_f16.json) next to CUDA's (issue 7)
# Every log goes to $OUT/log.txt (the device tool brings back at most 8 files); each step's
# exit status is reported there; a failing step does not stop the next, and the script exits
# with the last non-zero status (0 only when every step passed).
# Budget: sized for about 8 minutes on an H100/H200; set BENCH_SCALE=2 to halve the shapes.
# DEADLINE (seconds, default 560): optional steps that would start past it are skipped (said
# so in the log, and not counted as passed).
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
start=$(date +%s)
deadline="${DEADLINE:-560}"
# Whether at least $1 seconds are left before the deadline (else the step is skipped, said so).
time_for() {
  local left=$((deadline - ($(date +%s) - start)))
  if [ "$left" -lt "$1" ]; then echo "run.sh: SKIPPED $2 (${left}s left, needs $1)" | tee -a "$log"; return 1; fi
}
db="$OUT/tune_cuda.json"
step nvidia-smi; nvidia-smi >> "$log" 2>&1
step "cuda tests"
timeout 240 .dev/bin/cuda_backend --include-ignored --test-threads 1 >> "$log" 2>&1
status "cuda tests" $?
# Hopper's wgmma GEMM is opt-in until it has passed here (runtime/src/cuda/mod.rs).
if nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | grep -q '^9' && time_for 420 "wgmma tests"; then
  step "cuda tests with wgmma"
  VIDRT_CUDA_WGMMA=1 timeout 120 .dev/bin/cuda_backend --include-ignored --test-threads 1 harness_on_cuda \
    golden_forwards_in_bf16_on_cuda >> "$log" 2>&1
  status "cuda tests with wgmma" $?
fi
if time_for 400 "cuda tune"; then
  step "cuda tune"
  timeout 150 .dev/bin/vidrt --tune-db "$db" tune --backend cuda --model wan2.1-t2v-1.3b --height 480 --width 832 \
    --frames 81 --component dit --precision bf16 --repeats 3 --warmup 1 >> "$log" 2>&1
  status "cuda tune" $?
fi
step "vidrt bench"
timeout 240 .dev/bin/vidrt --tune-db "$db" bench --backend cuda --precision bf16 --suite all --scale "$scale" --repeats 5 --warmup 2 \
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
if ls .gl/*.deb >/dev/null 2>&1 && time_for 90 "wgpu on the GPU"; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  export VK_DRIVER_FILES="${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}"
  step "wgpu ops"
  timeout 60 .dev/bin/vidrt ops --backend wgpu >> "$log" 2>&1
  status "wgpu ops" $?
  step "wgpu bench"
  timeout 90 .dev/bin/vidrt bench --backend wgpu --precision f16 --suite kernels --scale "$scale" --repeats 5 \
    --warmup 2 --json "$OUT/bench_wgpu_f16.json" --markdown "$OUT/bench_wgpu_f16.md" >> "$log" 2>&1
  status "wgpu bench" $?
else
  echo "run.sh: SKIPPED wgpu on the GPU (no .gl loader debs carried, or no time)" | tee -a "$log"
fi
grep -E "^test |test result|SKIP|worst|rel_l2|run.sh:" "$log" | tail -n 40
head -n 60 "$OUT/compare_bf16.md" 2>/dev/null
exit "$worst"
