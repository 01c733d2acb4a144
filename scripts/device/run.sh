#!/usr/bin/env bash
# Runs on the GPU machine (the device tool: carry [".dev", ".gl"], built by scripts/device/build.sh),
# in one go, everything that needs the GPU, most important first; results land in $OUT (or
# ./.dev/out):
#   1. the CUDA hardware tests: the op harness, every golden folder at f32 tolerances, the DiT
#      and text encoder in bf16, the tiny pipeline in bf16 (issues 5, 6);
#   2. on Hopper, the harness, the bf16 forwards, every tuning candidate and the tiny pipeline
#      again with the wgmma GEMM, conv and attention (VIDRT_CUDA_WGMMA=1; opt-in until they
#      pass here);
#   3. vidrt bench, kernel suite at the real 1.3B shapes in bf16 (kernels' device time by CUDA
#      events, against the measured device-to-device copy and matmul peaks): bench_kernels.json,
#      and on Hopper again with wgmma (bench_kernels_wgmma.json);
#   4. the PyTorch peer at the same names, shapes, dtype and timing (torch_bf16.json), and the
#      ratio tables of both runs against it (compare_bf16.md);
#   5. vidrt bench, model suite (the 1.3B DiT forward at 832x480x81 and the other parts):
#      bench_models.json;
#   5b. vidrt tune of the real DiT's problems (every candidate timed, each against the
#      heuristic's point): tune_dit.json;
#   5c. the same for the VAE decoder's convs (on Hopper conv3d_wgmma: its gather against the
#      transposes plus its channels-last form, every tile): tune_vae.json;
#   5d. on Hopper, the DiT's problems again without wgmma (the default mma.sync families):
#      tune_dit_mma.json;
#   5e. on Hopper, the VAE's convs without wgmma: conv3d_mma's gather against the transposes
#      plus the channels-last conv, every tile: tune_vae_mma.json;
#   6. if time is left and a Vulkan loader was carried (.gl, see the device README), the wgpu
#      backend on the GPU's Vulkan adapter: the op harness and the kernel bench in f16.
# The test steps run with VIDRT_CUDA_SYNC=1 (a faulting kernel is named) and
# VIDRT_HARNESS_VERBOSE=1 (each case is logged before it runs, so a hang says where).
# Every log goes to $OUT/log.txt; each step's exit status is reported there; a failing step
# does not stop the next, and the script exits with the last non-zero status (0 only when
# every step passed). The device tool brings back at most 8 files: the script leaves three,
# log.txt, compare_bf16.md and results.tar.gz (every other result file).
# DEADLINE (seconds, default 420; keep it 40 under the run's timeout_s): a step that would
# start with less time left than it may take is skipped (said so in the log, and not
# counted as passed). 420 s plus the machine's start leaves a 15-minute device budget room
# for a second, shorter run after a fix. BENCH_SCALE=2 halves the benchmark shapes.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/.dev/out}"
mkdir -p "$OUT/results"
res="$OUT/results"
# VIDRT_CUDA_LOG: each compile's module loading (JIT) time in the log.
export VIDRT_GOLDEN="$PWD/.dev/golden" PYTHONUNBUFFERED=1 VIDRT_CUDA_LOG=1
scale="${BENCH_SCALE:-1}"
log="$OUT/log.txt"
worst=0
status() {
  echo "run.sh: $1 exited $2 at $(($(date +%s) - start))s" | tee -a "$log"
  if [ "$2" -ne 0 ]; then worst=$2; fi
}
step() { echo "=== $1" >> "$log"; }
start=$(date +%s)
deadline="${DEADLINE:-420}"
# Whether at least $1 seconds are left before the deadline (else the step is skipped, said so).
time_for() {
  local left=$((deadline - ($(date +%s) - start)))
  if [ "$left" -lt "$1" ]; then echo "run.sh: SKIPPED $2 (${left}s left, needs $1)" | tee -a "$log"; return 1; fi
}
hopper=false
if nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | grep -q '^9'; then hopper=true; fi
bench() { # timeout, extra env (or -), vidrt bench arguments...
  local t=$1 env=$2
  shift 2
  if [ "$env" = "-" ]; then
    timeout "$t" .dev/bin/vidrt bench --backend cuda --precision bf16 --scale "$scale" --repeats 5 --warmup 2 "$@" \
      >> "$log" 2>&1
  else
    env "$env" timeout "$t" .dev/bin/vidrt bench --backend cuda --precision bf16 --scale "$scale" --repeats 5 \
      --warmup 2 "$@" >> "$log" 2>&1
  fi
}
step nvidia-smi; nvidia-smi >> "$log" 2>&1

step "cuda tests"
VIDRT_CUDA_SYNC=1 VIDRT_HARNESS_VERBOSE=1 timeout 180 .dev/bin/cuda_backend --include-ignored --test-threads 1 \
  >> "$log" 2>&1
status "cuda tests" $?
if $hopper && time_for 120 "cuda tests with wgmma"; then
  step "cuda tests with wgmma"
  VIDRT_CUDA_WGMMA=1 VIDRT_CUDA_SYNC=1 VIDRT_HARNESS_VERBOSE=1 timeout 120 .dev/bin/cuda_backend --include-ignored \
    --test-threads 1 harness_on_cuda golden_forwards_in_bf16_on_cuda every_tuning_candidate_matches_the_cpu_on_cuda \
    generate_in_bf16_on_cuda \
    >> "$log" 2>&1
  status "cuda tests with wgmma" $?
fi

if time_for 75 "bench kernels"; then
  step "bench kernels"
  bench 75 - --suite kernels --json "$res/bench_kernels.json" --markdown "$res/bench_kernels.md"
  status "bench kernels" $?
fi
if $hopper && time_for 75 "bench kernels with wgmma"; then
  step "bench kernels with wgmma"
  bench 75 VIDRT_CUDA_WGMMA=1 --suite kernels --json "$res/bench_kernels_wgmma.json" \
    --markdown "$res/bench_kernels_wgmma.md"
  status "bench kernels with wgmma" $?
fi
from=""
for f in "$res/bench_kernels.json" "$res/bench_kernels_wgmma.json"; do
  if [ -f "$f" ]; then from="$f"; break; fi
done
if [ -n "$from" ] && time_for 75 "torch peer"; then
  step "torch peer"
  timeout 75 python3 benches/peers/torch_peer.py --from "$from" --json "$res/torch_bf16.json" >> "$log" 2>&1
  status "torch peer" $?
  : > "$OUT/compare_bf16.md"
  for f in "$res/bench_kernels.json" "$res/bench_kernels_wgmma.json"; do
    if [ -f "$f" ] && [ -f "$res/torch_bf16.json" ]; then
      echo "## $(basename "$f") against torch_bf16.json" >> "$OUT/compare_bf16.md"
      .dev/bin/vidrt bench --compare "$f" "$res/torch_bf16.json" >> "$OUT/compare_bf16.md" 2>> "$log"
      status "compare $(basename "$f")" $?
    fi
  done
fi
if time_for 100 "bench models"; then
  step "bench models"
  bench 100 - --suite models --json "$res/bench_models.json" --markdown "$res/bench_models.md" \
    --plot "$res/bench_models.svg"
  status "bench models" $?
fi

# Every tuning candidate of the real DiT's problems timed (guidance off: batch 1), the
# database kept (tune_dit.json: each candidate's median time); each problem's line says
# what tuning buys over the heuristic the benches above used (on Hopper with the wgmma
# families: the TMA, producer and ping-pong points).
if time_for 100 "tune dit"; then
  step "tune dit"
  wg=()
  if $hopper; then wg=(VIDRT_CUDA_WGMMA=1); fi
  env "${wg[@]}" timeout 100 .dev/bin/vidrt tune --backend cuda --precision bf16 --model wan2.1-t2v-1.3b \
    --height 480 --width 832 --frames 81 --component dit --no-cfg --repeats 3 --warmup 1 \
    --tune-db "$res/tune_dit.json" >> "$log" 2>&1
  status "tune dit" $?
fi

# The VAE decoder's convs the same way (tune_vae.json): the conv families' orientations and
# tiles at the real 832x480 shapes, each against the heuristic's point.
if time_for 90 "tune vae"; then
  step "tune vae"
  wg=()
  if $hopper; then wg=(VIDRT_CUDA_WGMMA=1); fi
  env "${wg[@]}" timeout 90 .dev/bin/vidrt tune --backend cuda --precision bf16 --model wan2.1-t2v-1.3b \
    --height 480 --width 832 --frames 81 --component vae --repeats 3 --warmup 1 \
    --tune-db "$res/tune_vae.json" >> "$log" 2>&1
  status "tune vae" $?
fi

# On Hopper the tunes above run the wgmma families; the default mma.sync ones (what the
# benches without VIDRT_CUDA_WGMMA ran: attention_mma's one- and two-m-tile points, the
# matmul_mma tiles) are timed here at the DiT's shapes (tune_dit_mma.json).
if $hopper && time_for 100 "tune dit mma"; then
  step "tune dit mma"
  timeout 100 .dev/bin/vidrt tune --backend cuda --precision bf16 --model wan2.1-t2v-1.3b \
    --height 480 --width 832 --frames 81 --component dit --no-cfg --repeats 3 --warmup 1 \
    --tune-db "$res/tune_dit_mma.json" >> "$log" 2>&1
  status "tune dit mma" $?
fi

# The VAE's convs on the default family (tune_vae_mma.json): each candidate is a point of
# conv3d_mma, gathering in place (cl=0) or transposing to channels-last first (cl=1, the
# transposes in its time), so the table says which layout wins at each real shape.
if $hopper && time_for 90 "tune vae mma"; then
  step "tune vae mma"
  timeout 90 .dev/bin/vidrt tune --backend cuda --precision bf16 --model wan2.1-t2v-1.3b \
    --height 480 --width 832 --frames 81 --component vae --repeats 3 --warmup 1 \
    --tune-db "$res/tune_vae_mma.json" >> "$log" 2>&1
  status "tune vae mma" $?
fi

if ls .gl/*.deb >/dev/null 2>&1 && time_for 90 "wgpu on the GPU"; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
  # Only where the NVIDIA ICD is there: a VK_DRIVER_FILES naming nothing hides every driver.
  icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
  step "wgpu ops"
  timeout 40 .dev/bin/vidrt ops --backend wgpu >> "$log" 2>&1
  status "wgpu ops" $?
  step "wgpu bench"
  timeout 45 .dev/bin/vidrt bench --backend wgpu --precision f16 --suite kernels --scale "$scale" --repeats 5 \
    --warmup 2 --json "$res/bench_wgpu_f16.json" --markdown "$res/bench_wgpu_f16.md" >> "$log" 2>&1
  status "wgpu bench" $?
else
  echo "run.sh: SKIPPED wgpu on the GPU (no .gl loader debs carried, or no time)" | tee -a "$log"
fi
# One file for the results (the tool brings back 8); if tar fails they stay, with the log.
if tar -czf "$OUT/results.tar.gz" -C "$OUT" results; then rm -rf "$res"; else status "tar" 1; fi
grep -E "^test |test result|SKIP|rel_l2|run.sh:|bench: .* failed|x the winner's" "$log" | tail -n 60
head -n 60 "$OUT/compare_bf16.md" 2>/dev/null
exit "$worst"
