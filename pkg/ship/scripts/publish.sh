#!/bin/sh
# podcopy: extract one collection into its staging directory in the analysis pod, then
# publish it under its final name, and say so. The agent counts the collection complete
# only when it reads the last line; anything else is a failure with tar's own stderr.
# Usage: sh -c "$(cat publish.sh)" podcopy-publish STAGING_ROOT ID FINAL
stage=$1 id=$2 final=$3
mkdir -p -- "$stage" || exit 1
tar -x -f - -C "$stage" || exit $?
if ! [ -f "$stage/$id/manifest.json" ]; then
  echo "podcopy: the archive ended without $id/manifest.json" >&2
  exit 3
fi
if [ -e "$final" ] || [ -L "$final" ]; then
  echo "podcopy: $final already exists" >&2
  exit 4
fi
mv -- "$stage/$id" "$final" || exit 5
printf 'podcopy-complete %s\n' "$id"
