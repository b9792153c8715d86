#!/bin/sh
# podcopy: what a source namespace's directory holds in the analysis pod: KiB in use (du)
# and published collections (<ns>/<pod>/<id>/manifest.json). Prints "KIB COUNT".
# Usage: sh -c "$(cat usage.sh)" podcopy-usage DIR
d=$1
if ! [ -d "$d" ]; then
  echo "0 0"
  exit 0
fi
kib=$(du -s -k -- "$d" | cut -f1) || exit 1
n=$(find "$d" -mindepth 3 -maxdepth 3 -name manifest.json -type f | wc -l) || exit 1
echo "$kib $n"
