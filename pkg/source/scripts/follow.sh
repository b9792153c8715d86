#!/bin/sh
# podcopy follow: stream the bytes of PATH after a checkpoint (see source.go: followScript).
# Usage: sh -c "$(cat follow.sh)" podcopy-follow PATH INODE OFFSET PREFIX
p=$1 ino=$2 off=$3 fp=$4
hdr() { printf 'podcopy-follow 1 %s %s %s %s %s %s %s\n' "$@"; }
prefix() { x=$(od -An -v -tx1 -N"$2" "$1" | tr -d ' \n') || exit 3; printf '%s' "${x:--}"; }
pino=0 psize=0
d=${p%/*}
while [ -n "$d" ]; do
  if [ -L "$d" ]; then hdr linked 0 0 0 0 0 -; exit 0; fi
  d=${d%/*}
done
if [ -L "$p" ]; then hdr notfile 0 0 0 0 0 -; exit 0; fi
if [ -e "$p" ]; then
  if ! [ -f "$p" ]; then hdr notfile 0 0 0 0 0 -; exit 0; fi
  exec 3<"$p" || exit 3
  # shellcheck disable=SC2046 # two numbers, split on purpose (IFS is the default here)
  set -- $(stat -L -c '%i %s' /proc/self/fd/3) || exit 3
  pino=$1 psize=$2
fi
st=ok
if [ "$ino" != 0 ] && [ "$pino" != "$ino" ]; then
  st=gone d=${p%/*}
  [ -n "$d" ] || d=/
  for f in "$d"/* "$d"/.*; do
    if ! [ -f "$f" ] || [ -L "$f" ]; then continue; fi
    [ "$(stat -c %i -- "$f" 2>/dev/null)" = "$ino" ] || continue
    exec 4<"$f" || break
    # shellcheck disable=SC2046 # two numbers, split on purpose
    set -- $(stat -L -c '%i %s' /proc/self/fd/4) || exit 3
    [ "$1" = "$ino" ] || break
    if [ "$2" -gt "$off" ]; then
      hdr ok "$1" "$off" "$2" "$pino" "$psize" "$(prefix /proc/self/fd/4 32)"
      dd bs=1 skip="$off" count=0 status=none <&4 || exit 4
      exec cat <&4
    fi
    st=rotated
    break
  done
  off=0
fi
if [ "$pino" = 0 ]; then hdr missing 0 0 0 0 0 -; exit 0; fi
if [ "$psize" -lt "$off" ]; then st=truncated off=0
elif [ "$pino" = "$ino" ] && [ "$fp" != - ] && [ "$(prefix /proc/self/fd/3 $((${#fp} / 2)))" != "$fp" ]; then st=truncated off=0
fi
hdr "$st" "$pino" "$off" "$psize" "$pino" "$psize" "$(prefix /proc/self/fd/3 32)"
if [ "$off" -gt 0 ]; then dd bs=1 skip="$off" count=0 status=none <&3 || exit 4; fi
exec cat <&3
