#!/usr/bin/env bash
# The end-to-end benchmark, side by side (benches/e2e.rs; BENCHMARKS.md has the method
# and the figures): ipenrich against a passthrough with its exact librdkafka settings,
# and against Benthos 4.27 when Go is present.
#
#   bash scripts/bench-e2e.sh                       # 500,000 events, 5 rounds
#   bash scripts/bench-e2e.sh --events 100000 --rounds 3 --only passthrough,ipenrich-mmdb
#
# It starts the test broker (scripts/kafka.sh) unless KAFKA_BOOTSTRAP is set, and
# builds Benthos v4.27.0 from the Go module proxy into .cache/benthos unless BENTHOS
# names a binary or one is on PATH (NO_BENTHOS=1 skips the peer). The report is
# printed and kept in target/bench-e2e/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
  eval "$(bash scripts/kafka.sh start)"
  export KAFKA_BOOTSTRAP
fi

benthos_version=v4.27.0
if [[ -n "${NO_BENTHOS:-}" ]]; then
  export BENTHOS=/nonexistent
elif [[ -z "${BENTHOS:-}" ]] && ! command -v benthos >/dev/null; then
  if command -v go >/dev/null; then
    dir=.cache/benthos
    if [[ ! -x "$dir/benthos" ]]; then
      echo "bench-e2e: building Benthos $benthos_version (MIT) into $dir (once)" >&2
      mkdir -p "$dir"
      # The components the benchmark uses (Kafka, MaxMind, Bloblang, stdio), not
      # `components/all`: some of its modules are not on the Go proxy.
      cat > "$dir/main.go" <<'GO'
package main

import (
	"context"

	_ "github.com/benthosdev/benthos/v4/public/components/io"
	_ "github.com/benthosdev/benthos/v4/public/components/kafka"
	_ "github.com/benthosdev/benthos/v4/public/components/maxmind"
	_ "github.com/benthosdev/benthos/v4/public/components/pure"
	"github.com/benthosdev/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
GO
      (
        cd "$dir"
        [[ -f go.mod ]] || go mod init ipenrich-bench-benthos >/dev/null 2>&1
        go get "github.com/benthosdev/benthos/v4@$benthos_version" >&2
        go mod tidy >&2
        go build -o benthos . >&2
      ) || echo "bench-e2e: could not build Benthos; its rounds are skipped" >&2
    fi
    [[ -x "$dir/benthos" ]] && export BENTHOS="$PWD/$dir/benthos"
  else
    echo "bench-e2e: no Go toolchain and no benthos binary; the peer's rounds are skipped" >&2
  fi
fi

exec cargo bench --locked --bench e2e -- "$@"
