#!/usr/bin/env bash
# Builds here (no GPU needed) everything scripts/device/run.sh needs on a GPU machine that has
# no Rust and no registry, into .dev/ (ignored through .git/info/exclude):
#   .dev/bin/vidrt         the CLI with the CUDA and wgpu backends (release)
#   .dev/bin/cuda_backend  the CUDA hardware tests (a cargo test binary, release)
#   .dev/golden/           the golden cases (from ../shared/golden or $VIDRT_GOLDEN)
#   .gl/*.deb              the Vulkan loader for the wgpu steps (amd64 debs, as the device
#                          README says; skipped with a message when apt cannot fetch them)
# Then, with the device tool: carry [".dev", ".gl"], command `bash scripts/device/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .git/info
grep -qx '/.dev/' .git/info/exclude 2>/dev/null || echo '/.dev/' >> .git/info/exclude
chmod -R u+w .dev 2>/dev/null || true
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
grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >> .git/info/exclude
if [ ! -d .gl ] || ! ls .gl/*.deb >/dev/null 2>&1; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086 # $o is a list of options
  if ! (apt-get $o update >/dev/null && cd .gl && apt-get $o download libvulkan1 >/dev/null); then
    echo "build.sh: could not fetch the Vulkan loader; run.sh will skip the wgpu steps" >&2
  fi
fi
du -sh .dev .gl
echo "build.sh: done; now run scripts/device/run.sh on the GPU machine with .dev carried"
