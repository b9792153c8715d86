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
# The custody record: verify it with the plugin (your own credentials), tamper with one byte
# in the analysis pod, and watch verify name the file.
(cd "$REPO_ROOT" && go build -o "$REPO_ROOT/bin/kubectl-podcopy" ./cmd/kubectl-podcopy)
export PATH="$REPO_ROOT/bin:$PATH"
say "kubectl podcopy ls -n demo mysql"
kubectl podcopy ls -n demo mysql
say "kubectl podcopy verify -n demo mysql    # the signed record, bound to this pod, then every file re-hashed here"
kubectl podcopy verify -n demo mysql
file="$dir/mysql/var/log/mysql/slow.log"
say "kubectl -n $ans exec $apod -c $actr -- sh -c 'printf X | dd of=$file bs=1 seek=10 conv=notrunc'   # tamper with one byte"
# shellcheck disable=SC2016 # $1 is the inner shell's: the path is an argument, never code
kubectl -n "$ans" exec "$apod" -c "$actr" -- sh -c 'printf X | dd of="$1" bs=1 seek=10 conv=notrunc 2>/dev/null' sh "$file"
say "kubectl podcopy verify -n demo mysql"
if kubectl podcopy verify -n demo mysql; then
  die "verify did not notice the tampered byte"
fi

# The evidence console, with a responder's own token.
apply() { kubectl apply -f - >/dev/null; }
kubectl -n demo create serviceaccount responder --dry-run=client -o yaml | apply
kubectl -n demo create role responder --verb=get,list,watch,patch --resource=pods --dry-run=client -o yaml | apply
kubectl -n demo create rolebinding responder --role=responder --serviceaccount=demo:responder --dry-run=client -o yaml | apply
kubectl -n podcopy create role demo-responder --verb=get,list --resource=pods,configmaps --dry-run=client -o yaml | apply
kubectl -n podcopy create role demo-responder-exec --verb=create,get --resource=pods/exec --dry-run=client -o yaml | apply
for r in demo-responder demo-responder-exec; do
  kubectl -n podcopy create rolebinding "$r" --role="$r" --serviceaccount=demo:responder --dry-run=client -o yaml | apply
done
ip=$(kubectl -n podcopy get pods -l app.kubernetes.io/component=agent -o jsonpath='{.items[0].status.hostIP}')
cat <<EOF

The evidence console: open http://$ip:$(cat "$STATE/shell-port")/ and sign in with a responder's token:
  kubectl -n demo create token responder
then type the namespace demo, Show pods, open mysql: its collection's record is signed and
bound to the pod ("verified"); press Verify to re-hash every file, and it names the byte you
changed.

The locked bucket: this cluster runs an S3 evidence store (versitygw, Object Lock); send the demo
namespace's collections there too, then collect again and verify the bucket's copy:
  bash hack/cluster/helm.sh upgrade podcopy charts/podcopy -n podcopy --reuse-values \\
    --set-json 'config.destination.namespaceModes={"demo":"both"}'
  kubectl -n demo annotate pod mysql --overwrite podcopy/trigger=again
  kubectl podcopy status -n demo mysql    # "bucket": "s3://.../demo/mysql/<id>/"
(README: "For responders: a locked bucket, signed records, offline verification".)
EOF
printf '\nThe cluster keeps running: export KUBECONFIG=%s (make cluster-down stops it).\n' "$KUBECONFIG"
