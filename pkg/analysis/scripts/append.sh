#!/bin/sh
# podcopy follow: record the checkpoint, append stdin to FILE, print the sizes.
# Usage: sh -c "$(cat append.sh)" podcopy-follow FILE CHECKPOINT STATE
f=$1 s=$2
mkdir -p -- "${f%/*}" "${s%/*}" || exit 1
size=$(stat -c %s -- "$f" 2>/dev/null) || size=0
printf '%s %s\n' "$3" "$size" > "$s.tmp" && mv -f -- "$s.tmp" "$s" || exit 1
cat >> "$f" || exit 1
end=$(stat -c %s -- "$f") || exit 1
printf '%s %s\n' "$size" "$end"
