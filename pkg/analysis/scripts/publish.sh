#!/bin/sh
# podcopy: extract one collection into its staging directory in the analysis pod, then
# publish it under its final name, and say so on stdout. The agent counts the collection
# complete only when it reads the last line, "podcopy-complete ID". Every failure is one
# line "podcopy-failed REASON" on stdout, printed at once: the exit status alone can arrive
# late, since the runtime reports it only after the agent closes stdin.
# Usage: sh -c "$(cat publish.sh)" podcopy-publish STAGING_ROOT ID FINAL [gzip|none [RECORD]]
# With "gzip" the archive on stdin is gzip-compressed (compression: gzip). With RECORD (the
# custody record's file name) the collection is published only if the archive holds it.
stage=$1 id=$2 final=$3 codec=${4:-none} record=${5:-}
fail() { printf 'podcopy-failed %s\n' "$*"; exit 2; }
err=$(mkdir -p -- "$stage" 2>&1) || fail "$err"
# tar's stderr (its reason when it fails) is kept, at most its last 2 KiB, with its status.
extract() {
  if [ "$codec" = gzip ]; then tar -x -z -f - -C "$stage"; else tar -x -f - -C "$stage"; fi
}
out=$({ extract 2>&1 >/dev/null; echo "podcopy-tar-exit $?"; } | tail -c 2048)
rc=${out##*podcopy-tar-exit }
if [ "$rc" != 0 ]; then
  fail "tar exited $rc: $(printf '%s' "${out%podcopy-tar-exit*}" | tr '\n' ' ')"
fi
[ -f "$stage/$id/manifest.json" ] || fail "the archive ended without $id/manifest.json"
if [ -n "$record" ] && [ ! -f "$stage/$id/$record" ]; then
  fail "the archive ended without $id/$record"
fi
if [ -e "$final" ] || [ -L "$final" ]; then fail "$final already exists"; fi
err=$(mv -- "$stage/$id" "$final" 2>&1) || fail "$err"
printf 'podcopy-complete %s\n' "$id"
