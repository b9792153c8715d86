#!/usr/bin/env bash
# make lint: golangci-lint (built once from the Go module proxy, cached by version),
# then shellcheck on every shell script (hack/ and the scripts embedded in the agent); helm lint runs in chart-lint.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cluster/lib.sh"
GOLANGCI_VERSION=v2.15.0
dir=$CACHE/tools/golangci-lint-$GOLANGCI_VERSION
if [ ! -x "$dir/golangci-lint" ]; then
  log "go install golangci-lint@$GOLANGCI_VERSION (once, ~2 min)"
  mkdir -p "$dir"
  GOBIN=$dir go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_VERSION"
fi
cd "$REPO_ROOT"
"$dir/golangci-lint" run ./...
mapfile -t scripts < <(git ls-files '*.sh')
shellcheck -x -P SCRIPTDIR "${scripts[@]}"
log "lint clean: golangci-lint, shellcheck (${#scripts[@]} scripts)"
