#!/usr/bin/env bash
# The test command (README, .ci/run): everything vidrt can check on a machine with no GPU.
#
# Installs what it needs: cargo-nextest if missing, ptxas and nvdisasm (PyPI
# `nvidia-cuda-nvcc`, `nvidia-cuda-nvdisasm`, into a private venv) for the PTX assembly and
# SASS checks, and Mesa's lavapipe (Debian `mesa-vulkan-drivers`, `libvulkan1`) so the wgpu
# backend's tests run on a real Vulkan driver. Builds with the `wgpu` and `cuda` features
# (both load their drivers at run time; the CUDA hardware tests are #[ignore]d, so nextest
# reports them as skipped).
#
# A test whose tool or device is missing fails; it never passes without having run. Under CI
# (CI=true) an install that fails stops this script. Elsewhere (no root for apt-get, no
# network) it prints a warning and leaves those tests out of the run, so the closing line
# counts them as skipped. The golden reference data is read from $VIDRT_GOLDEN or
# ../shared/golden (the golden tests fail loudly without it).
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURES="wgpu,cuda"

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# nextest filters of the tests left out because what they need could not be installed.
left_out=()
missing() { # what, filter
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: could not install $1 (CI needs it)" >&2
    exit 1
  fi
  echo "test.sh: WARNING: could not install $1; its tests are left out of this run (counted as skipped)" >&2
  left_out+=("$2")
}
if ptxas="$(bash scripts/install-ptxas.sh)"; then
  export VIDRT_PTXAS="$ptxas"
else
  missing "ptxas/nvdisasm" "binary(ptxas)"
fi
if ! bash scripts/install-lavapipe.sh; then
  missing "lavapipe (a Vulkan driver)" "binary(wgpu_backend) | test(bench_small_suite_on_wgpu)"
fi
filter=()
if [ "${#left_out[@]}" -gt 0 ]; then
  expr="${left_out[0]}"
  for f in "${left_out[@]:1}"; do expr="$expr | $f"; done
  filter=(-E "not ($expr)")
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked --features "$FEATURES" -- -D warnings
# The API docs build without broken or private intra-doc links.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --features "$FEATURES"
cargo test --workspace --doc --locked --features "$FEATURES"
# Last, so that the closing line is the real count of tests run.
cargo nextest run --workspace --locked --no-fail-fast --features "$FEATURES" "${filter[@]}"
