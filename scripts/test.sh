#!/usr/bin/env bash
# The test command (README, .ci/run): everything vidrt can check on a machine with no GPU.
#
# Installs what it needs: cargo-nextest if missing, ptxas (PyPI `nvidia-cuda-nvcc`, into a
# private venv) for the PTX assembly check, and Mesa's lavapipe (Debian `mesa-vulkan-drivers`,
# `libvulkan1`) so the wgpu backend's tests run on a real Vulkan driver. Builds with the
# `wgpu` and `cuda` features (both load their drivers at run time; the CUDA tests skip with
# "no CUDA driver found" on a machine without one and are never counted as passed).
#
# Under CI (CI=true) a missing ptxas or wgpu adapter is a failure, not a skip. Elsewhere an
# install that cannot run (no root for apt-get, no network) prints a warning and those tests
# print SKIP. The golden reference data is read from $VIDRT_GOLDEN or ../shared/golden (the
# golden tests fail loudly without it).
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURES="wgpu,cuda"

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

if ptxas="$(bash scripts/install-ptxas.sh)"; then
  export VIDRT_PTXAS="$ptxas"
else
  echo "test.sh: WARNING: could not install ptxas; the ptxas check will SKIP" >&2
fi
if ! bash scripts/install-lavapipe.sh; then
  echo "test.sh: WARNING: could not install lavapipe; the wgpu tests will SKIP" >&2
fi
if [ "${CI:-}" = "true" ]; then
  export VIDRT_REQUIRE_PTXAS=1 VIDRT_REQUIRE_WGPU=1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked --features "$FEATURES" -- -D warnings
cargo test --workspace --doc --locked --features "$FEATURES"
# Last, so that the closing line is the real count of tests run.
cargo nextest run --workspace --locked --no-fail-fast --features "$FEATURES"
