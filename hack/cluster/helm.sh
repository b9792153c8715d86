#!/usr/bin/env bash
# Runs helm, built once from the Go module proxy and cached by version.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
HELM_VERSION=v4.3.1
dir=$CACHE/helm-$HELM_VERSION
if [ ! -x "$dir/helm" ]; then
  log "go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION (once, ~4 min)"
  mkdir -p "$dir"
  GOBIN=$dir CGO_ENABLED=0 go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
fi
if [ -f "$STATE/env" ] && [ -z "${KUBECONFIG:-}" ]; then export KUBECONFIG=$STATE/admin.kubeconfig; fi
exec "$dir/helm" "$@"
