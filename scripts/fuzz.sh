#!/usr/bin/env bash
# Runs the cargo-fuzz targets of fuzz/ (weights, ir_text, config, golden_case) for a bound:
#
#   bash scripts/fuzz.sh            # 10 seconds per target (libFuzzer -max_total_time)
#   bash scripts/fuzz.sh 60         # 60 seconds per target
#   bash scripts/fuzz.sh runs 1000000   # exactly 1,000,000 executions per target (-runs)
#
# Environment: FUZZ_TARGETS="weights config" runs only those; FUZZ_SANITIZER (default
# `address`; `none` builds without AddressSanitizer, about 2x faster per execution).
#
# cargo-fuzz needs nightly-only -Z flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them (AddressSanitizer works on stable x86_64 Linux that way, no nightly needed). Installs
# cargo-fuzz if it is missing. Each target runs on a temporary copy of its seed corpus
# (fuzz/corpus/<target>/), so a run never grows the committed corpus; crash, leak and timeout
# inputs are written to fuzz/artifacts/<target>/ (ignored by git) and the log of each run to
# fuzz/artifacts/<target>.log. fuzz/dicts/<target>.dict, where there is one, is passed as the
# libFuzzer dictionary (field and op names, hostile numbers such as 2^62). Builds use -O -a:
# optimised, with debug assertions and overflow checks on. Exits non-zero when any target
# crashes (or fails to build).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: bash scripts/fuzz.sh [SECONDS] | bash scripts/fuzz.sh runs COUNT" >&2
  exit 2
}

mode=time
bound=10
case "${1:-}" in
  "") ;;
  runs)
    mode=runs
    bound="${2:-}"
    ;;
  *) bound="$1" ;;
esac
[[ "$bound" =~ ^[0-9]+$ ]] && [ "$bound" -gt 0 ] || usage

export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-address}"
targets="${FUZZ_TARGETS:-weights ir_text config golden_case}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# The largest input each target is given (the seeds fit; bigger inputs only slow it down).
max_len() {
  case "$1" in
    ir_text) echo 10240 ;;
    golden_case) echo 8192 ;;
    *) echo 4096 ;;
  esac
}

cd fuzz
start=$(date +%s)
cargo fuzz build -O -a --sanitizer "$sanitizer"
echo "fuzz.sh: built the fuzz targets in $(($(date +%s) - start)) s (sanitizer: $sanitizer)"

if [ "$mode" = runs ]; then
  limit="-runs=$bound"
else
  limit="-max_total_time=$bound"
fi

failed=()
summary=()
for t in $targets; do
  [ -d "corpus/$t" ] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
  work="$(mktemp -d "${TMPDIR:-/tmp}/vidrt-fuzz-$t.XXXXXX")"
  cp -R "corpus/$t/." "$work/"
  mkdir -p "artifacts/$t"
  log="artifacts/$t.log"
  echo "fuzz.sh: $t ($limit) ..."
  dict=()
  [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
  rc=0
  cargo fuzz run -O -a --sanitizer "$sanitizer" "$t" "$work" -- \
    "$limit" -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" "${dict[@]}" >"$log" 2>&1 || rc=$?
  rm -rf "$work"
  # The scratch folders the target wrote its per-input files to (src/fuzzing.rs).
  rm -rf /dev/shm/vidrt-fuzz-"$t"-* "${TMPDIR:-/tmp}"/vidrt-fuzz-"$t"-[0-9]*
  done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)"
  last="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true)"
  cov="$(sed -nE 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+\/[0-9A-Za-z]+).*/cov \1, ft \2, corpus \3/p' <<<"$last")"
  eps="$(sed -nE 's/.*exec\/s: ([0-9]+).*/\1/p' <<<"$last")"
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    summary+=("$t: FAILED (exit $rc), see fuzz/$log and fuzz/artifacts/$t/")
    tail -40 "$log" >&2
  else
    summary+=("$t: ${done_line:-no Done line}; $cov; exec/s $eps")
  fi
done

echo "fuzz.sh: summary ($limit per target, sanitizer $sanitizer)"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
