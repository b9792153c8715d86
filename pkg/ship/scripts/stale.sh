#!/bin/sh
# podcopy: remove staging directories (<dir>/<ns>/<pod>/.partial/<id>) not modified for
# MINUTES minutes, printing each one removed. Complete collections are never touched.
# Usage: sh -c "$(cat stale.sh)" podcopy-stale DIR MINUTES
dir=$1 minutes=$2
[ -d "$dir" ] || exit 0
find "$dir" -mindepth 4 -maxdepth 4 -path "$dir/*/*/.partial/*" -mmin +"$minutes" -print -exec rm -rf -- {} +
