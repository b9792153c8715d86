# Shared settings for the local cluster scripts. Sourced, not run.
# shellcheck shell=bash
# shellcheck disable=SC2034 # the settings are used by the scripts that source this file
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.16
CONTAINERD_VERSION=v2.4.2
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# CACHE survives clean clones when set outside the repo (CI sets it to ~/.cache/podcopy).
CACHE=${PODCOPY_CACHE_DIR:-$REPO_ROOT/.cache}
BIN=$CACHE/bin-k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-containerd-$CONTAINERD_VERSION-$(go env GOARCH 2>/dev/null || echo amd64)
STATE=${PODCOPY_CLUSTER_STATE:-$CACHE/cluster}

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
