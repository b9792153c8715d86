#!/bin/sh
# podcopy: remove staging directories (<dir>/<ns>/<pod>/<staging>/<id>) not modified for
# MINUTES minutes, printing each one removed. Complete collections are never touched.
# Usage: sh -c "$(cat stale.sh)" podcopy-stale DIR STAGING MINUTES
dir=$1 staging=$2 minutes=$3
[ -d "$dir" ] || exit 0
find "$dir" -mindepth 4 -maxdepth 4 -path "$dir/*/*/$staging/*" -mmin +"$minutes" -print -exec rm -rf -- {} +
