#!/bin/sh
# podcopy: list the published collections below DIR, one manifest path a line
# (DIR/<ns>/<pod>/<id>/manifest.json). Staging (.partial) and follow files have no manifest
# at that depth, so they are never listed.
# Usage: sh -c "$(cat collections.sh)" podcopy-collections DIR
d=$1
[ -d "$d" ] || exit 0
find "$d" -mindepth 4 -maxdepth 4 -name manifest.json -type f
