#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for SECONDS each (default 600) with cargo-fuzz on
# the nightly toolchain, then prints, per target, the executions and whether it
# crashed. Exits 1 when any target crashed (or could not run).
#
#   bash scripts/fuzz.sh [SECONDS]
#
# The committed seeds (fuzz/seeds/<target>/) are copied into the working corpus
# (fuzz/corpus/<target>/, ignored by git) which keeps what the fuzzer learns across
# runs. Crashing inputs land in fuzz/artifacts/<target>/, libFuzzer's output in
# fuzz/logs/<target>.log. Reproduce one crash with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/crash-<hash>
#
# Environment:
#   FUZZ_TARGETS     space-separated subset of targets (default: all)
#   FUZZ_SANITIZER   address (default) or none (faster; the crate forbids unsafe)
#   FUZZ_KEEP_GOING  1: fork mode that records a crash and keeps fuzzing instead of
#                    stopping at the first one (every crash is still reported)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'fuzz.sh: %s\n' "$*" >&2; }

seconds="${1:-600}"
case "$seconds" in
  '' | *[!0-9]*) say "usage: scripts/fuzz.sh [SECONDS]"; exit 2 ;;
esac
sanitizer="${FUZZ_SANITIZER:-address}"

# Largest input per target: an event or a database up to the 1 MiB event limit,
# a provider answer of 256 KiB, a config file of 64 KiB.
declare -A max_len=(
  [event_pipeline]=1048576
  [provider_responses]=262144
  [config_load]=65536
  [mmdb_file]=1048576
)
targets="${FUZZ_TARGETS:-event_pipeline provider_responses config_load mmdb_file}"

# Tools: librdkafka is built from source with cmake; cargo-fuzz needs nightly.
if ! command -v cmake >/dev/null 2>&1; then
  say "installing cmake"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq cmake >/dev/null; else sudo apt-get install -y cmake; fi
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Debug assertions turn on overflow checks: an arithmetic overflow is a crash too.
build_flags=(--sanitizer "$sanitizer" --debug-assertions)
say "building the fuzz targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build "${build_flags[@]}"

mkdir -p fuzz/logs
failed=0
summary=()
for target in $targets; do
  len="${max_len[$target]:-}"
  [ -n "$len" ] || { say "unknown target $target"; exit 2; }
  corpus="fuzz/corpus/$target"
  artifacts="fuzz/artifacts/$target"
  log="fuzz/logs/$target.log"
  mkdir -p "$corpus" "$artifacts"
  cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  args=(
    -max_total_time="$seconds"
    -rss_limit_mb=4096
    -max_len="$len"
    -timeout=30
    -print_final_stats=1
    -artifact_prefix="$artifacts/"
  )
  # Grammar tokens (JSON, YAML keys, MMDB metadata) the mutator would rarely invent.
  if [ -f "fuzz/dicts/$target.dict" ]; then
    args+=(-dict="fuzz/dicts/$target.dict")
  fi
  if [ "${FUZZ_KEEP_GOING:-0}" = 1 ]; then
    args+=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1)
  fi
  before=$(find "$artifacts" -type f | wc -l)
  say "running $target for ${seconds}s"
  status=0
  cargo +nightly fuzz run "${build_flags[@]}" "$target" "$corpus" -- "${args[@]}" >"$log" 2>&1 || status=$?
  after=$(find "$artifacts" -type f | wc -l)
  # Executions: the final stats, else (fork mode, a crash) the last status line.
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  if [ -z "$execs" ]; then
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#' || true)
  fi
  new=$((after - before))
  if [ "$status" -ne 0 ] || [ "$new" -gt 0 ]; then
    failed=1
    verdict="CRASHED ($new new artifact(s) in $artifacts/, exit $status; see $log)"
    grep -m1 -E "panicked at|ERROR: libFuzzer" "$log" | sed 's/^/    /' >&2 || true
  else
    verdict="ok"
  fi
  summary+=("$(printf '%-20s %12s executions  %s' "$target" "${execs:-?}" "$verdict")")
done

printf '\n%-20s %12s\n' "target" "executions"
printf '%s\n' "${summary[@]}"
exit "$failed"
