#!/bin/sh
# podcopy: list what one glob matches in the source container, NUL-terminated.
# Usage: sh -c "$(cat list.sh)" podcopy-list ROOT PATTERN
# The pattern arrives as a positional parameter; with IFS empty the unquoted $2 undergoes
# pathname expansion and nothing else, so it is never split or run as code. Every name is
# checked again by the agent (canonical, matching the pattern segment by segment): sh
# expands ".*" to "." and ".." as well.
IFS=
root=$1
cd "$root" || exit 2
for f in $2; do
  if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
done
