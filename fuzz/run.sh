#!/usr/bin/env bash
# CI entry for fuzzing: installs nightly and cargo-fuzz when missing, builds
# every target, replays the regression inputs, then fuzzes each target for
# FUZZ_SECONDS (default 30) from a scratch copy of its seed corpus. Exits
# non-zero if any target crashes; the crashing input is kept under
# fuzz/artifacts/<target>/ and printed in hex.
#
#   FUZZ_SECONDS=120 fuzz/run.sh               longer runs
#   FUZZ_TARGETS="range_header config" fuzz/run.sh   some targets only
#   FUZZ_ARGS="-max_len=512" fuzz/run.sh      extra libFuzzer options
set -euo pipefail
export CARGO_TERM_COLOR=never
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-30}
cargo_fuzz_version=0.13.2
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
start=$(date +%s)

# libFuzzer needs nightly-only compiler flags. Without a nightly that can be
# installed, stable accepts them under RUSTC_BOOTSTRAP.
toolchain=nightly
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  if ! rustup toolchain install nightly --profile minimal; then
    echo "fuzz: nightly cannot be installed; using stable with RUSTC_BOOTSTRAP=1" >&2
    toolchain=stable
    export RUSTC_BOOTSTRAP=1
  fi
fi
echo "fuzz: $(rustup run "$toolchain" rustc --version)"

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" --force
fi

# Release build with debug assertions and overflow checks (-a), ASan on.
cargo "+$toolchain" fuzz build -O -a
bin=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release

targets=${FUZZ_TARGETS:-$(cargo "+$toolchain" fuzz list)}

# The harness makes its scratch files under TMPDIR: keep them in scratch/.
rm -rf scratch
mkdir -p scratch/tmp artifacts
export TMPDIR=$PWD/scratch/tmp

# Libfuzzer's own options: per-input time and memory caps turn hangs and
# runaway allocations into findings instead of a stuck CI.
opts=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
# shellcheck disable=SC2206 # word splitting of the extra options is wanted
opts+=(${FUZZ_ARGS:-})

show_crash() {
  local t=$1 log=$2
  grep -m1 -A3 "panicked at" "$log" >&2 || tail -n 20 "$log" >&2
  for f in "artifacts/$t"/*; do
    [ -f "$f" ] || continue
    echo "fuzz: $t: input $f ($(wc -c <"$f") bytes):" >&2
    od -An -tx1 -v "$f" | head -n 16 >&2
  done
}

failed=()
summary=()
for t in $targets; do
  # Only this run's findings, so the ones printed below are fresh.
  rm -rf "artifacts/$t"
  mkdir -p "artifacts/$t"
  # Inputs that once crashed must keep passing.
  if [ -d "regressions/$t" ] && [ -n "$(ls -A "regressions/$t")" ]; then
    if ! "$bin/$t" "${opts[@]}" "regressions/$t"/* >"scratch/$t.regressions.log" 2>&1; then
      echo "fuzz: $t: a regression input crashes" >&2
      tail -n 30 "scratch/$t.regressions.log" >&2
      failed+=("$t")
      continue
    fi
  fi
  mkdir -p "scratch/corpus/$t"
  cp "corpus/$t"/* "scratch/corpus/$t/"
  log=scratch/$t.log
  echo "fuzz: $t for ${seconds}s"
  rc=0
  "$bin/$t" "${opts[@]}" -max_total_time="$seconds" -artifact_prefix="artifacts/$t/" \
    "scratch/corpus/$t" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | grep -o 'cov: [0-9]*' || true)
  summary+=("$(printf '%-20s %10s runs %8s exec/s  %s  rc=%s' "$t" "${runs:-?}" "${rate:-?}" "$cov" "$rc")")
  if [ "$rc" -ne 0 ]; then
    echo "fuzz: $t crashed (exit $rc)" >&2
    show_crash "$t" "$log"
    failed+=("$t")
  fi
done

echo "fuzz: summary ($(($(date +%s) - start))s in all)"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs under fuzz/artifacts/, logs under fuzz/scratch/)" >&2
  exit 1
fi
echo "fuzz: no crash"
