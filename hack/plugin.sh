#!/usr/bin/env bash
# Builds kubectl-podcopy for each GOOS/GOARCH given, as krew expects it: dist/kubectl-podcopy_<os>_<arch>.tar.gz
# (holding the binary), plus dist/sha256sums.txt for plugins/podcopy.yaml.
#   hack/plugin.sh VERSION linux/amd64 darwin/arm64 ...
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
version=$1; shift
out=$root/dist
rm -rf "$out" && mkdir -p "$out"
for platform in "$@"; do
  os=${platform%/*} arch=${platform#*/}
  work=$(mktemp -d)
  (cd "$root" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath \
    -ldflags "-s -w -X main.version=$version" -o "$work/kubectl-podcopy" ./cmd/kubectl-podcopy)
  tar -czf "$out/kubectl-podcopy_${os}_${arch}.tar.gz" -C "$work" kubectl-podcopy
  rm -rf "$work"
  echo "built dist/kubectl-podcopy_${os}_${arch}.tar.gz"
done
(cd "$out" && sha256sum ./*.tar.gz > sha256sums.txt)
cat "$out/sha256sums.txt"
