#!/bin/sh
# podcopy follow: an earlier pod with this name left FILE and its CHECKPOINT: rename both to
# the names the agent computed for that pod's UID, so the new pod never extends them.
# Usage: sh -c "$(cat retire.sh)" podcopy-follow FILE CHECKPOINT RETIRED-FILE RETIRED-CHECKPOINT
for pair in "$1|$3" "$2|$4"; do
  from=${pair%%|*} to=${pair#*|}
  [ -e "$from" ] || continue
  if [ -e "$to" ]; then
    echo "podcopy-follow: $to already exists" >&2
    exit 1
  fi
  mv -- "$from" "$to" || exit 1
done
