#!/usr/bin/env bash
# CPU profile of the agent while it collects many small files, printed as pprof's top list.
# Needs the local cluster with podcopy deployed by hack/deploy.sh helm (debug.pprof is on in
# charts/podcopy/ci/local-values.yaml). Usage: bash bench/profile.sh [FILES] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-10000} seconds=${2:-30}
export PODCOPY_CACHE_DIR=${PODCOPY_CACHE_DIR:-$PWD/.cache}
state=$PODCOPY_CACHE_DIR/cluster
# shellcheck disable=SC1091
. "$state/env"
export KUBECONFIG=$state/admin.kubeconfig PATH=$BIN:$PATH
port=$(cat "$state/agent-port")
ns=bench-profile
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: src}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: podcopy.local/busybox:1
    imagePullPolicy: Never
    # busybox has no split: one head per file (10,000 take ~30 s), then ready.
    command: [/bin/sh, -c, "mkdir -p /var/log/many && cd /var/log/many && i=0 && while [ \$i -lt $files ]; do head -c 1024 /dev/urandom > f\$i; i=\$((i+1)); done && touch /tmp/ready && exec sleep 2147483647"]
    readinessProbe:
      exec: {command: [test, -e, /tmp/ready]}
      periodSeconds: 2
YAML
kubectl -n "$ns" wait pod/src --for=condition=Ready --timeout=15m >/dev/null
sleep 2
out=bench/results/profile-small-files
mkdir -p "$out"
curl -sf "http://127.0.0.1:$port/debug/pprof/profile?seconds=$seconds" -o "$out/cpu.pprof" &
profiler=$!
end=$((SECONDS + seconds - 2)) n=0 wall=0
while [ $SECONDS -lt $end ]; do
  prev=$(kubectl -n "$ns" get pod src -o jsonpath='{.metadata.annotations.podcopy/status}')
  t0=$(date +%s.%N)
  kubectl -n "$ns" annotate --overwrite pod src podcopy/collect=/var/log/many "podcopy/trigger=p$n-$RANDOM" >/dev/null
  deadline=$((SECONDS + 600))
  while :; do
    st=$(kubectl -n "$ns" get pod src -o jsonpath='{.metadata.annotations.podcopy/status}')
    if [ "$st" != "$prev" ] && printf '%s' "$st" | grep -Eq '"phase":"(Succeeded|Failed|Rejected)"'; then break; fi
    [ $SECONDS -lt $deadline ] || { echo "no final status within 10 minutes: $st" >&2; exit 1; }
    sleep 0.1
  done
  printf '%s' "$st" | grep -q Succeeded || { echo "collection failed: $st" >&2; exit 1; }
  wall=$(echo "$wall + $(date +%s.%N) - $t0" | bc) n=$((n + 1))
  kubectl -n podcopy exec podcopy-analysis-0 -c store -- rm -rf "/collect/$ns" >/dev/null
done
wait "$profiler"
{
  echo "# agent CPU profile: $n collections of $files files of 1 KiB in ${seconds}s ($(echo "scale=2; $wall / $n" | bc) s wall each)"
  go tool pprof -top -nodecount=25 "$out/cpu.pprof" 2>/dev/null
} | tee "$out/top.txt"
kubectl delete namespace "$ns" --wait=false >/dev/null
