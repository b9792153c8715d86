#!/usr/bin/env bash
# The README's demo: a "mysql" pod writing a slow log is annotated, and the collected files
# and manifest are shown from the analysis pod. Expects `make deploy` to have run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cluster/lib.sh"
# shellcheck source=/dev/null # written by cluster.sh up
. "$STATE/env"
export KUBECONFIG PATH="$BIN:$PATH"
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n demo delete pod mysql --ignore-not-found --wait=true >/dev/null
cat <<'YAML' | kubectl apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata:
  name: mysql
  namespace: demo
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: mysql
    image: podcopy.local/busybox:1
    imagePullPolicy: Never
    command: ["/bin/sh", "-c"]
    args:
    - |
      mkdir -p /var/log/mysql
      i=0
      while true; do
        i=$((i+1))
        echo "# Time: $(date -u +%FT%TZ)" >> /var/log/mysql/slow.log
        echo "# Query_time: 2.$i Lock_time: 0.0 Rows_sent: 1 Rows_examined: 100000" >> /var/log/mysql/slow.log
        echo "SELECT * FROM orders WHERE customer_id = $i;" >> /var/log/mysql/slow.log
        echo "$(date -u +%FT%TZ) [Note] connection $i" >> /var/log/mysql/error.log
        sleep 0.2
      done
YAML
kubectl -n demo wait --for=condition=Ready pod/mysql --timeout=60s >/dev/null
sleep 2
say "kubectl -n demo annotate pod mysql podcopy/collect=/var/log/mysql/slow.log,/var/log/mysql/*.log"
kubectl -n demo annotate pod mysql --overwrite "podcopy/collect=/var/log/mysql/slow.log,/var/log/mysql/*.log" \
  "podcopy/trigger=demo-$(date +%s)"
for _ in $(seq 1 60); do
  phase=$(kubectl -n demo get pod mysql -o jsonpath='{.metadata.annotations.podcopy/status}' | sed -n 's/.*"phase":"\([A-Za-z]*\)".*/\1/p')
  case "$phase" in Succeeded|Failed|Rejected) break ;; esac
  sleep 0.5
done
say "kubectl -n demo get pod mysql -o jsonpath='{.metadata.annotations.podcopy/status}'"
kubectl -n demo get pod mysql -o jsonpath='{.metadata.annotations.podcopy/status}'; echo
say "kubectl -n demo get events --field-selector involvedObject.name=mysql | grep Collection"
kubectl -n demo get events --field-selector involvedObject.name=mysql | grep Collection || true
[ "$phase" = Succeeded ] || die "collection did not succeed (phase $phase)"
dest=$(kubectl -n demo get pod mysql -o jsonpath='{.metadata.annotations.podcopy/status}' | sed -n 's/.*"destination":"\([^"]*\)".*/\1/p')
target=${dest%%:*} dir=${dest#*:}            # <namespace>/<pod>/<container>:<dir>
ans=${target%%/*} rest=${target#*/}; apod=${rest%%/*} actr=${rest#*/}
say "kubectl -n $ans exec $apod -c $actr -- find $dir -type f"
kubectl -n "$ans" exec "$apod" -c "$actr" -- find "$dir" -type f
say "kubectl -n $ans exec $apod -c $actr -- cat $dir/manifest.json"
kubectl -n "$ans" exec "$apod" -c "$actr" -- cat "$dir/manifest.json"
say "kubectl -n $ans exec $apod -c $actr -- sha256sum $dir/mysql/var/log/mysql/slow.log"
kubectl -n "$ans" exec "$apod" -c "$actr" -- sha256sum "$dir/mysql/var/log/mysql/slow.log"
printf '\nThe cluster keeps running: export KUBECONFIG=%s (make cluster-down stops it).\n' "$KUBECONFIG"
