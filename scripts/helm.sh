#!/usr/bin/env bash
# Prints the path of a helm binary, building helm v3.22.0 from the Go module proxy into
# .cache/bin the first time when none is on PATH (no download site is needed).
set -euo pipefail
ROOT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
BIN=${IPENRICH_CACHE:-$ROOT/.cache}/bin
if command -v helm >/dev/null 2>&1; then
  command -v helm
  exit 0
fi
GOPATH_BIN=$(command -v go >/dev/null 2>&1 && echo "$(go env GOPATH)/bin" || true)
if [ -n "$GOPATH_BIN" ] && [ -x "$GOPATH_BIN/helm" ]; then
  echo "$GOPATH_BIN/helm"
  exit 0
fi
if [ -x "$BIN/helm" ]; then
  echo "$BIN/helm"
  exit 0
fi
command -v go >/dev/null 2>&1 || { echo "helm.sh: go is needed to build helm" >&2; exit 1; }
mkdir -p "$BIN"
echo "helm.sh: building helm v3.22.0 (once, a few minutes)" >&2
GOBIN="$BIN" GOFLAGS=-mod=mod go install helm.sh/helm/v3/cmd/helm@v3.22.0 >&2
echo "$BIN/helm"
