#!/usr/bin/env bash
# Builds here (no GPU needed) everything scripts/device/run.sh needs on a GPU machine that has
# no Rust and no registry, into .dev/ (ignored through .git/info/exclude):
#   .dev/bin/vidrt         the CLI with the CUDA and wgpu backends (release)
#   .dev/bin/cuda_backend  the CUDA hardware tests (a cargo test binary, release)
#   .dev/golden/           the golden cases (from ../shared/golden or $VIDRT_GOLDEN)
# Then, with the device tool: carry [".dev"], command `bash scripts/device/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .git/info
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
rm -rf .dev && mkdir -p .dev/bin
cargo build --release --locked --features cuda,wgpu --bin vidrt
cp target/release/vidrt .dev/bin/
exe=$(cargo test --release --locked --features cuda --test cuda_backend --no-run --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_backend":
        print(m["executable"])' | tail -1)
[ -n "$exe" ] || { echo "build.sh: no cuda_backend test binary" >&2; exit 1; }
cp "$exe" .dev/bin/cuda_backend
# Debug info is not needed there and the carried tree is limited to 64 MiB.
strip .dev/bin/* 2>/dev/null || true
golden="${VIDRT_GOLDEN:-../shared/golden}"
cp -r "$golden" .dev/golden
du -sh .dev
echo "build.sh: done; now run scripts/device/run.sh on the GPU machine with .dev carried"
