#!/usr/bin/env bash
# Builds OCI images without a Docker engine (buildah, daemonless) as docker-archive files.
#   images.sh base    busybox (also the pause/sandbox image) and gnutar test images -> $CACHE/images/base
#   images.sh agent   the podcopy agent image from the repo's Dockerfile -> $CACHE/images/agent.tar
#   images.sh testapp the distroless test image (hack/testapp) -> $CACHE/images/testapp.tar
#   images.sh evidence the evidence store (versitygw, S3 with Object Lock) -> $CACHE/images/evidence.tar
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

B=(buildah --storage-driver vfs --root "$CACHE/buildah/root" --runroot "$CACHE/buildah/run")
OUT=$CACHE/images

build() { # name context containerfile out.tar
  "${B[@]}" bud --quiet --isolation chroot -f "$3" -t "$1" "$2" >/dev/null
  rm -f "$4.tmp"
  "${B[@]}" push --quiet "$1" "docker-archive:$4.tmp:$1" >/dev/null
  mv "$4.tmp" "$4"
  log "image $1 -> $4"
}

# copy_with_libs root binary... : copies binaries and the shared libraries they load.
copy_with_libs() {
  local root=$1; shift
  for b in "$@"; do
    local real; real=$(readlink -f "$b")
    mkdir -p "$root$(dirname "$b")"
    cp "$real" "$root$b"
    ldd "$real" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -n "$(readlink -f "$lib")" "$root$lib"
    done
  done
}

base() {
  mkdir -p "$OUT/base"
  local version=4 # bump when the rootfs recipe changes
  if [ -f "$OUT/base/.version" ] && [ "$(cat "$OUT/base/.version")" = "$version" ]; then return 0; fi
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN

  # busybox: Debian's static busybox, one link per applet.
  local bb=$work/busybox/rootfs
  mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp" "$bb/var/log" "$bb/collect"
  chmod 1777 "$bb/tmp"
  cp /bin/busybox "$bb/bin/busybox"
  for applet in $(/bin/busybox --list); do [ "$applet" = busybox ] || ln -sf busybox "$bb/bin/$applet"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$bb/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$bb/etc/group"
  printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/bin\nCMD ["/bin/sleep", "2147483647"]\n' > "$work/busybox/Containerfile"
  build podcopy.local/busybox:1 "$work/busybox" "$work/busybox/Containerfile" "$OUT/base/busybox.tar"
  "${B[@]}" tag podcopy.local/busybox:1 podcopy.local/pause:1
  rm -f "$OUT/base/pause.tar.tmp"
  "${B[@]}" push --quiet podcopy.local/pause:1 "docker-archive:$OUT/base/pause.tar.tmp:podcopy.local/pause:1" >/dev/null
  mv "$OUT/base/pause.tar.tmp" "$OUT/base/pause.tar"

  # gnutar: GNU tar, gzip, bash and dash with coreutils, from this machine's Debian packages.
  local gt=$work/gnutar/rootfs
  mkdir -p "$gt/tmp" "$gt/var/log" "$gt/etc" "$gt/collect"
  chmod 1777 "$gt/tmp"
  copy_with_libs "$gt" /bin/tar /bin/gzip /bin/bash /bin/dash /usr/bin/sha256sum /bin/cat /bin/sleep /bin/ls \
    /bin/rm /bin/mkdir /bin/mv /bin/cp /usr/bin/stat /usr/bin/head /usr/bin/wc /bin/date /usr/bin/env /usr/bin/stty /usr/bin/seq \
    /bin/ln /usr/bin/touch /usr/bin/mkfifo /usr/bin/test /usr/bin/tail /usr/bin/sort /usr/bin/id /usr/bin/find /bin/ps
  ln -sf dash "$gt/bin/sh"
  cp /etc/passwd "$gt/etc/passwd"; cp /etc/group "$gt/etc/group"
  printf 'FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin:/bin\nCMD ["/bin/sleep", "2147483647"]\n' > "$work/gnutar/Containerfile"
  build podcopy.local/gnutar:1 "$work/gnutar" "$work/gnutar/Containerfile" "$OUT/base/gnutar.tar"
  echo "$version" > "$OUT/base/.version"
}

agent() {
  mkdir -p "$OUT"
  (cd "$REPO_ROOT" && make --no-print-directory build-linux)
  build podcopy.local/podcopy-agent:dev "$REPO_ROOT" "$REPO_ROOT/Dockerfile" "$OUT/agent.tar"
}

# testapp: the e2e suite's distroless image: one static binary (hack/testapp), no shell, no tar.
testapp() {
  mkdir -p "$OUT"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  mkdir -p "$work/rootfs/etc" "$work/rootfs/tmp" "$work/rootfs/var/log"
  chmod 1777 "$work/rootfs/tmp" "$work/rootfs/var/log" # writable by the non-root user the suite runs it as
  echo "root:x:0:0:secret of the image:/root:/sbin/nologin" > "$work/rootfs/etc/passwd"
  (cd "$REPO_ROOT" && CGO_ENABLED=0 GOOS=linux go build -trimpath -o "$work/rootfs/app" ./hack/testapp)
  printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/app"]\n' > "$work/Containerfile"
  build podcopy.local/distroless:1 "$work" "$work/Containerfile" "$OUT/testapp.tar"
}

# evidence: versitygw (Apache-2.0), built from the Go module proxy once per version, as a
# FROM-scratch image; its posix backend implements versioned buckets with Object Lock.
VERSITYGW_VERSION=v1.8.0
evidence() {
  mkdir -p "$OUT"
  local bin=$CACHE/tools/versitygw-$VERSITYGW_VERSION
  if [ ! -x "$bin/versitygw" ]; then
    log "go install github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION (once, ~3 min)"
    mkdir -p "$bin.tmp"
    (cd "$REPO_ROOT" && CGO_ENABLED=0 GOBIN="$bin.tmp" go install -trimpath -ldflags="-s -w" \
      "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
    rm -rf "$bin"; mv "$bin.tmp" "$bin"
  fi
  local tag=podcopy.local/versitygw:$VERSITYGW_VERSION
  if [ -f "$OUT/evidence.tar" ] && [ "$(cat "$OUT/evidence.version" 2>/dev/null)" = "$tag" ]; then return 0; fi
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  mkdir -p "$work/rootfs/tmp" "$work/rootfs/data/root" "$work/rootfs/data/versions"
  chmod 1777 "$work/rootfs/tmp"
  cp "$bin/versitygw" "$work/rootfs/versitygw"
  printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/versitygw"]\n' > "$work/Containerfile"
  build "$tag" "$work" "$work/Containerfile" "$OUT/evidence.tar"
  echo "$tag" > "$OUT/evidence.version"
}

# multiarch: the agent image for linux/amd64 and linux/arm64 as one manifest list, from the
# binaries make image-multiarch cross-compiles (FROM scratch: nothing runs while building, so
# no emulation is needed), written as an OCI archive. Checked without an arm64 node: the list
# names both platforms, each image's config says its architecture and holds a binary of that
# ELF machine, and the arm64 binary runs under qemu user emulation (apt qemu-user-static).
multiarch() {
  mkdir -p "$OUT"
  local name=podcopy.local/podcopy-agent:multiarch
  "${B[@]}" manifest rm "$name" >/dev/null 2>&1 || true
  "${B[@]}" manifest create "$name" >/dev/null
  "${B[@]}" bud --quiet --isolation chroot --platform linux/amd64,linux/arm64 --manifest "$name" -f "$REPO_ROOT/Dockerfile" "$REPO_ROOT" >/dev/null
  rm -f "$OUT/agent-multiarch.tar.tmp"
  "${B[@]}" manifest push --quiet --all "$name" "oci-archive:$OUT/agent-multiarch.tar.tmp" >/dev/null
  mv "$OUT/agent-multiarch.tar.tmp" "$OUT/agent-multiarch.tar"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  tar -xf "$OUT/agent-multiarch.tar" -C "$work"
  python3 - "$work" <<'PY'
import json, sys, os, tarfile, io
root = sys.argv[1]
blob = lambda d: os.path.join(root, "blobs", *d.split(":"))
index = json.load(open(os.path.join(root, "index.json")))
lst = index["manifests"][0]
if "manifest.list" not in lst["mediaType"] and "image.index" not in lst["mediaType"]:
    sys.exit("not a manifest list: " + lst["mediaType"])
machines = {"amd64": 62, "arm64": 183}  # ELF e_machine: EM_X86_64, EM_AARCH64
seen = set()
for m in json.load(open(blob(lst["digest"])))["manifests"]:
    arch = m["platform"]["architecture"]
    man = json.load(open(blob(m["digest"])))
    cfg = json.load(open(blob(man["config"]["digest"])))
    if cfg["architecture"] != arch or cfg["os"] != "linux":
        sys.exit(f"{arch}: the image config says {cfg['os']}/{cfg['architecture']}")
    found = False
    for layer in man["layers"]:
        with tarfile.open(blob(layer["digest"])) as t:
            for member in t.getmembers():
                if member.name.lstrip("./") == "podcopy-agent":
                    head = t.extractfile(member).read(20)
                    machine = int.from_bytes(head[18:20], "little")
                    if head[:4] != b"\x7fELF" or machine != machines[arch]:
                        sys.exit(f"{arch}: /podcopy-agent is ELF machine {machine}, want {machines[arch]}")
                    found = True
    if not found:
        sys.exit(f"{arch}: no /podcopy-agent in the image")
    seen.add(arch)
if seen != set(machines):
    sys.exit(f"platforms {sorted(seen)}, want {sorted(machines)}")
print("manifest list: linux/amd64 and linux/arm64, each with its own architecture's binary")
PY
  if ! command -v qemu-aarch64-static >/dev/null; then
    (apt-get install -y -qq qemu-user-static >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq qemu-user-static >/dev/null)) ||
      die "qemu-user-static is needed to run the arm64 binary here (apt-get install qemu-user-static)"
  fi
  local v; v=$(qemu-aarch64-static "$REPO_ROOT/bin/linux/arm64/podcopy-agent" --version)
  log "image $name (linux/amd64, linux/arm64) -> $OUT/agent-multiarch.tar; the arm64 binary under qemu says version $v"
}

case "${1:-}" in
  base) base ;;
  agent) agent ;;
  multiarch) multiarch ;;
  testapp) testapp ;;
  evidence) evidence ;;
  *) echo "usage: $0 base|agent|multiarch|testapp|evidence" >&2; exit 2 ;;
esac
