#!/usr/bin/env bash
# The SASS of catalog kernels, counted: registers (ptxas -v), whole-kernel instructions, and
# the main loop's (the longest backward branch whose body holds an MMA): instructions, LDG,
# STS, LDS/LDSM, SEL, PRMT, IMAD/IADD. Static counts for comparing two versions of a kernel,
# not times. Installs ptxas and nvdisasm if needed (scripts/install-ptxas.sh).
# Usage: bash scripts/sass-loop.sh sm_80|sm_90a NAME...   (names from the kernel catalog)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 sm_80|sm_90a NAME..." >&2; exit 2; }
arch="$1"
shift
ptxas="$(bash scripts/install-ptxas.sh)"
nvdisasm="$(dirname "$ptxas")/nvdisasm"
[ -x "$nvdisasm" ] || nvdisasm="$(find "$(dirname "$ptxas")/../.." -type f -name nvdisasm -perm -u+x | head -n 1)"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cargo run --release -q -p vidrt-kernels --example dump_ptx -- "$dir" "$arch" "$@"
for name in "$@"; do
  regs="$("$ptxas" -arch="$arch" -v "$dir/$name.ptx" -o "$dir/$name.cubin" 2>&1 | grep -o 'Used [0-9]* registers')"
  "$nvdisasm" "$dir/$name.cubin" > "$dir/$name.sass"
  python3 - "$dir/$name.sass" "$name" "$regs" <<'PY'
import re, sys
path, name, regs = sys.argv[1:4]
lines = open(path).read().splitlines()
ins, labels = [], {}
for i, l in enumerate(lines):
    m = re.match(r'\s*(\.L_x_\d+):', l)
    if m:
        labels[m.group(1)] = len(ins)
    m = re.match(r'\s+/\*([0-9a-f]{4,})\*/\s+(.*?);', l)
    if m:
        ins.append(m.group(2))
best = []
for i, t in enumerate(ins):
    m = re.search(r'\bBRA\b.*?(\.L_x_\d+)', t)
    if m and labels.get(m.group(1), i + 1) <= i:
        body = ins[labels[m.group(1)]:i + 1]
        if any(re.search(r'HMMA|HGMMA', x) for x in body) and len(body) > len(best):
            best = body
pats = [("LDG", r"LDG"), ("STS", r"\bSTS"), ("LDS/LDSM", r"\bLDS"), ("SEL", r"\bSEL\b"), ("PRMT", r"PRMT"),
        ("IMAD/IADD", r"IMAD|IADD"), ("MMA", r"HMMA|HGMMA")]
counts = ", ".join("%s %d" % (k, sum(1 for x in best if re.search(p, x))) for k, p in pats)
print("%s (%s): %d SASS instructions; main loop %d: %s" % (name, regs, len(ins), len(best), counts))
PY
done
