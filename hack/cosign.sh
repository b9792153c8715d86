#!/usr/bin/env bash
# Runs cosign, built once from the Go module proxy and cached by version (the e2e suite checks
# that cosign verifies a custody record's Sigstore bundle offline).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cluster/lib.sh"
COSIGN_VERSION=v2.6.5
dir=$CACHE/cosign-$COSIGN_VERSION
if [ ! -x "$dir/cosign" ]; then
  log "go install github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION (once, several minutes)"
  mkdir -p "$dir"
  GOBIN=$dir CGO_ENABLED=0 go install "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION"
fi
exec "$dir/cosign" "$@"
