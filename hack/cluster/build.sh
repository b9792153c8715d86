#!/usr/bin/env bash
# Builds (once, cached by version) every binary the local cluster needs, and installs the
# Debian packages it uses. Output: $CACHE/bin-<version>/... ; prints the bin dir.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

# install_debs [--unit]: the packages the cluster and e2e use; with --unit only those plain
# unit tests and lint use (busybox for the second tar flavour, shellcheck).
install_debs() {
  local missing=()
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  command -v shellcheck >/dev/null || missing+=(shellcheck) # make lint
  if [ "${1:-}" != --unit ]; then
    command -v runc >/dev/null || missing+=(runc)
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    command -v buildah >/dev/null || missing+=(buildah)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v openssl >/dev/null || missing+=(openssl)
    [ -x /usr/bin/chromium ] || missing+=(chromium) # the web shell's browser test
    command -v tmux >/dev/null || missing+=(tmux) # the plugin's progress bar, seen in a terminal
    command -v mount >/dev/null || missing+=(mount)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# build_mod <tools module dir> <out dir> <package>...
build_mod() {
  local mod=$1 out=$2; shift 2
  for pkg in "$@"; do
    local name=${pkg##*/}
    [ "$name" = v3 ] && name=etcd
    if [ ! -x "$out/$name" ]; then
      log "go build $pkg"
      (cd "$here/tools/$mod" && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$out/$name.tmp" "$pkg")
      mv "$out/$name.tmp" "$out/$name"
    fi
  done
}

main() {
  if [ "${1:-}" = --unit-deps-only ]; then install_debs --unit; return 0; fi
  install_debs
  [ "${1:-}" = --deps-only ] && return 0
  mkdir -p "$BIN"
  build_mod etcd "$BIN" go.etcd.io/etcd/server/v3
  build_mod containerd "$BIN" github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr
  build_mod kube "$BIN" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
}
main "$@"
