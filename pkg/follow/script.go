package follow

// The scripts below are fixed text; a followed path and everything else the agent passes
// reach them only as positional arguments ("$1", ...), never as code. They need a POSIX
// shell, stat, dd, od, tr and cat (busybox or GNU coreutils).

// sourceScript streams the bytes of path ($1) after a checkpoint (inode $2, offset $3;
// inode 0 means none). Its first output line is a header
//
//	podcopy-follow 1 <status> <inode> <start> <size> <path inode> <path size> <prefix>
//
// followed by the bytes of file <inode> from offset <start> to its end. <prefix> is the hex
// of that file's first (up to 32) bytes, "-" when empty; the checkpoint carries it ($4) to
// tell a new file that reused the inode number of a deleted one. Status is ok (same file,
// or the first read), rotated (the checkpoint's file was renamed away and is finished; the
// path's new file follows from its start), gone (the checkpoint's file is no longer in the
// directory), truncated (the file shrank below the checkpoint, or its first bytes changed,
// and is read from its start), missing (no file at path), notfile (a symlink or not a
// regular file) or linked (a directory above path is a symbolic link: never read through).
//
// The file is opened once and everything is read through that descriptor, so a rotation
// between the stat and the read cannot mix two files. A renamed-away file is looked up by
// inode in the same directory and finished first (one segment per run: the agent runs the
// script again for the next one).
const sourceScript = `p=$1 ino=$2 off=$3 fp=$4
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
  set -- $(stat -L -c '%i %s' /proc/self/fd/3) || exit 3
  pino=$1 psize=$2
fi
st=ok
if [ "$ino" != 0 ] && [ "$pino" != "$ino" ]; then
  st=gone d=${p%/*}
  [ -n "$d" ] || d=/
  for f in "$d"/* "$d"/.*; do
    [ -f "$f" ] && ! [ -L "$f" ] || continue
    [ "$(stat -c %i -- "$f" 2>/dev/null)" = "$ino" ] || continue
    exec 4<"$f" || break
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
exec cat <&3`

// probeScript prints the size of the destination file $1 (0 when absent) on one line and
// the checkpoint file $2 (or "none") on the next.
const probeScript = `size=$(stat -c %s -- "$1" 2>/dev/null) || size=0
st=$(cat -- "$2" 2>/dev/null) || st=none
printf '%s\n%s\n' "$size" "$st"`

// appendScript appends its stdin to the destination file $1. First it records in the
// checkpoint file $2 the segment about to be appended: the state line $3 (uid, inode, source
// offset and prefix) followed by the destination file's current size. Whatever part of the
// segment then reaches the file, its size says exactly how far the source was shipped. It
// prints the file's size before and after the append: the bytes that landed, which is not
// always what was sent (the container runtime can drop the tail of a short stdin that is
// closed at once: measured with containerd 2.4.2).
const appendScript = `f=$1 s=$2
mkdir -p -- "${f%/*}" "${s%/*}" || exit 1
size=$(stat -c %s -- "$f" 2>/dev/null) || size=0
printf '%s %s\n' "$3" "$size" > "$s.tmp" && mv -f -- "$s.tmp" "$s" || exit 1
cat >> "$f" || exit 1
end=$(stat -c %s -- "$f") || exit 1
printf '%s %s\n' "$size" "$end"`

// globScript prints, NUL-terminated, the regular files (not symlinks) glob $1 matches. With
// IFS empty, the unquoted $1 is expanded as a pattern but never split or run.
const globScript = `IFS=
for p in $1; do
  if [ -f "$p" ] && ! [ -L "$p" ]; then printf '%s\0' "$p"; fi
done`

// argv0 names the scripts in process listings.
const argv0 = "podcopy-follow"
