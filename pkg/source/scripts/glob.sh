#!/bin/sh
# podcopy follow: list the regular files PATTERN matches, NUL-terminated.
# Usage: sh -c "$(cat glob.sh)" podcopy-follow PATTERN
IFS=
for p in $1; do
  if [ -f "$p" ] && ! [ -L "$p" ]; then printf '%s\0' "$p"; fi
done
