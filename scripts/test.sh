#!/usr/bin/env bash
# The test command (README, .ci/run): everything vidrt can check on a machine with no GPU.
# Needs a Rust toolchain; installs cargo-nextest if it is missing. The golden reference data
# is read from $VIDRT_GOLDEN or ../shared/golden (the golden tests fail loudly without it).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --doc --locked
# Last, so that the closing line is the real count of tests run.
cargo nextest run --workspace --locked --no-fail-fast
