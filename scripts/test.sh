#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a used one. Installs what is missing,
# starts a real Apache Kafka broker (scripts/kafka.sh), runs every test, lints,
# validates every example pipeline, and stops the broker again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf 'test.sh: %s\n' "$*" >&2; }

# Build tools: cargo comes with rustup; librdkafka is built from source with cmake.
if ! command -v cmake >/dev/null 2>&1; then
  say "installing cmake"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq cmake >/dev/null; else sudo apt-get install -y cmake; fi
fi
# A real Prometheus for tests/prometheus.rs, with promtool for /metrics and the chart's
# alert rules (tests/helm.rs);
# buildah for the container image (scripts/image.sh).
for pkg in prometheus:prometheus buildah:buildah; do
  if ! command -v "${pkg%%:*}" >/dev/null 2>&1; then
    say "installing ${pkg#*:}"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkg#*:}" >/dev/null; else sudo apt-get install -y "${pkg#*:}"; fi
  fi
done
for tool in cargo java mvn go; do
  command -v "$tool" >/dev/null 2>&1 || { say "$tool is required but not installed"; exit 1; }
done
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

# A real single-node Kafka broker on 127.0.0.1 (jars from Maven Central, cached in .cache/).
started_here=0
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then started_here=1; fi
eval "$(bash scripts/kafka.sh start)"
export KAFKA_BOOTSTRAP
if [ "$started_here" = 1 ] && [ "${KEEP_KAFKA:-0}" != 1 ]; then
  trap 'bash scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
fi
say "kafka at $KAFKA_BOOTSTRAP"

say "formatting and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

say "tests"
cargo test --all-targets --locked --no-fail-fast

say "example pipelines"
cargo build --locked --quiet
for f in pipelines/*.yaml; do
  ./target/debug/ipenrich check --config "$f" >/dev/null || { say "check failed: $f"; exit 1; }
done
say "container image"
bash scripts/image.sh
say "end-to-end benchmark harness (a short run: it must run and lose nothing; the figures are in BENCHMARKS.md)"
bash scripts/bench-e2e.sh --events 20000 --rounds 1
say "all passed"
