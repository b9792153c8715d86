#!/bin/sh
# podcopy: reserve part of a source namespace's quota in the analysis pod, atomically across
# every agent (a lock directory: mkdir is atomic), before a collection writes.
# Usage: sh -c "$(cat reserve.sh)" podcopy-reserve NSDIR LEDGER NAME BYTES MAXCOLLECTIONS MAXBYTES STALEMINUTES
# NSDIR is the namespace's directory, LEDGER its reservations directory, NAME this
# collection's reservation (<pod>_<id>). The namespace holds its published collections and
# the bytes in its directory, plus every other live reservation of a collection not yet
# published (one collection and its bytes each);
# reservations not renewed for STALEMINUTES belong to no live collection and are dropped.
# A first reservation takes one collection (refused at MAXCOLLECTIONS, or when MAXBYTES is
# used up; 0: no bound); BYTES is what NAME holds in all (a later call with more grows it),
# granted up to what MAXBYTES leaves. Prints "granted BYTES USED COUNT" or
# "refused collections|bytes USED COUNT" (USED in bytes, COUNT in collections).
d=$1 ledger=$2 name=$3 want=$4 maxn=$5 maxb=$6 stale=$7
mkdir -p -- "$ledger" || exit 1
lock=$ledger/.lock
tries=0
until mkdir -- "$lock" 2>/dev/null; do
  # A lock older than a minute was left by a reservation that was killed: break it.
  find "$ledger" -maxdepth 1 -name .lock -type d -mmin +1 -exec rmdir -- {} + 2>/dev/null
  tries=$((tries + 1))
  if [ "$tries" -gt 300 ]; then
    echo "podcopy-reserve: $lock is held" >&2
    exit 1
  fi
  sleep 0.2 2>/dev/null || sleep 1 # a sleep without fractions waits a second
done
trap 'rmdir -- "$lock"' EXIT
find "$ledger" -maxdepth 1 -type f -mmin +"$stale" -exec rm -f -- {} + || exit 1
# In use: the namespace's directory less its staging directories (a collection in flight
# counts by its reservation instead) and the ledger, plus the other reservations.
kib=$(du -s -k -- "$d" | cut -f1) || exit 1
for p in "$d"/*/.partial "$ledger"; do
  [ -d "$p" ] || continue
  k=$(du -s -k -- "$p" | cut -f1) || exit 1
  kib=$((kib - k))
done
# The published collections, seen once: a reservation is skipped below only when its own
# collection is in this list, so a collection published between two looks is never counted
# zero times (nor twice).
published=$(find "$d" -mindepth 3 -maxdepth 3 -name manifest.json -type f) || exit 1
n=0
[ -z "$published" ] || n=$(printf '%s\n' "$published" | wc -l)
nl='
'

reserved=0 others=0 mine=
for f in "$ledger"/*; do
  [ -f "$f" ] || continue
  # A reservation of a collection already published (<pod>_<id>: its manifest is in place,
  # between the publish and the release) is counted by its collection, not twice.
  r=${f##*/}
  case "$nl$published$nl" in *"$nl$d/${r%%_*}/${r#*_}/manifest.json$nl"*) continue ;; esac
  b=$(head -c 32 -- "$f")
  case $b in '' | *[!0-9]*) b=0 ;; esac
  if [ "$f" = "$ledger/$name" ]; then
    mine=$b
    continue
  fi
  reserved=$((reserved + b))
  others=$((others + 1))
done
used=$((kib * 1024 + reserved))
count=$((n + others))
grant=$want
if [ -z "$mine" ]; then
  if [ "$maxn" -gt 0 ] && [ "$count" -ge "$maxn" ]; then
    echo "refused collections $used $count"
    exit 0
  fi
  if [ "$maxb" -gt 0 ] && [ "$used" -ge "$maxb" ]; then
    echo "refused bytes $used $count"
    exit 0
  fi
fi
if [ "$maxb" -gt 0 ] && [ "$grant" -gt $((maxb - used)) ]; then
  grant=$((maxb - used))
  [ "$grant" -ge 0 ] || grant=0
fi
printf '%s\n' "$grant" >"$ledger/$name.tmp" && mv -f -- "$ledger/$name.tmp" "$ledger/$name" || exit 1
echo "granted $grant $used $count"
