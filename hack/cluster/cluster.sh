#!/usr/bin/env bash
# A real single-node Kubernetes cluster on loopback, built from source (see
# ../../docs/local-cluster.md). Usage: cluster.sh up|down|status|kubeconfig|env
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

PKI=$STATE/pki
LOGS=$STATE/logs
RUN=$STATE/run
SOCK=$STATE/containerd/containerd.sock
PATH=$BIN:$PATH
COMPONENTS=(etcd containerd kube-apiserver kubelet kube-controller-manager kube-scheduler)

pidfile() { echo "$RUN/$1.pid"; }
alive() { local p; p=$(cat "$(pidfile "$1")" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }

free_ports() { (cd "$REPO_ROOT" && go run ./hack/freeport "$1"); }

cert() { # name CN O [SAN]
  local name=$1 cn=$2 org=$3 san=${4:-}
  local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  local ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth,clientAuth"
  [ -n "$san" ] && ext="$ext
subjectAltName=$san"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 30 -sha256 -extfile <(echo "$ext") -out "$PKI/$name.crt" 2>/dev/null
}

gen_pki() {
  mkdir -p "$PKI"
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=podcopy-local-ca" -days 30 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
  cert apiserver kube-apiserver "" "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert admin admin system:masters
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert node system:node:localhost system:nodes
  cert kubelet-serving localhost "" "DNS:localhost,IP:127.0.0.1"
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

kubeconfig_for() { # name user-cert
  cat > "$STATE/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $1
  user:
    client-certificate: $PKI/$2.crt
    client-key: $PKI/$2.key
contexts:
- name: local
  context: {cluster: local, user: $1}
current-context: local
KC
}

start() { # name cmd...
  local name=$1; shift
  log "starting $name"
  printf '%s\0' "$@" > "$RUN/$name.cmd" # what restart runs again
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
}

wait_for() { # description seconds command...
  local what=$1 secs=$2; shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  die "$what not ready after ${secs}s; see $LOGS"
}

write_configs() {
  mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/ipam" "$STATE/kubelet" "$STATE/pod-logs"
  cat > "$STATE/containerd/config.toml" <<TOML
version = 3
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$STATE/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$STATE/cni/net.d"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
TOML
  cat > "$STATE/cni/net.d/10-podcopy.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "podcopy-local", "plugins": [
  {"type": "bridge", "bridge": "podcopy0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam", "ranges": [[{"subnet": "10.244.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON
  cat > "$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
readOnlyPort: 0
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$SOCK
podLogsDir: $STATE/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
enforceNodeAllocatable: []
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
localStorageCapacityIsolation: false
clusterDomain: cluster.local
rotateCertificates: false
maxPods: 1100  # bench/: 1,000 pods annotated at once (host-network pods: the pod subnet is a /24)
YAML
}

up() {
  if [ -f "$STATE/env" ] && alive kube-apiserver; then
    log "cluster already running (state $STATE); nothing to do"
    return 0
  fi
  if [ -d "$RUN" ] && ls "$RUN"/*.pid >/dev/null 2>&1; then
    log "a previous cluster was left half-running; tearing it down first"
    down
  fi
  bash "$here/build.sh"
  rm -rf "$STATE"; mkdir -p "$STATE" "$LOGS" "$RUN"
  read -r APISERVER_PORT ETCD_PORT ETCD_PEER_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT KCM_PORT SCHED_PORT <<<"$(free_ports 7)"
  PAUSE_IMAGE=podcopy.local/pause:1
  cat > "$STATE/env" <<ENV
APISERVER_PORT=$APISERVER_PORT
ETCD_PORT=$ETCD_PORT
KUBELET_PORT=$KUBELET_PORT
PAUSE_IMAGE=$PAUSE_IMAGE
KUBECONFIG=$STATE/admin.kubeconfig
CONTAINERD_SOCK=$SOCK
BIN=$BIN
STATE=$STATE
ENV
  gen_pki
  kubeconfig_for admin admin
  kubeconfig_for node node
  kubeconfig_for controller-manager controller-manager
  kubeconfig_for scheduler scheduler
  write_configs

  start etcd etcd --name local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
  start containerd containerd --config "$STATE/containerd/config.toml"
  start kube-apiserver kube-apiserver --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --secure-port "$APISERVER_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --endpoint-reconciler-type none --authorization-mode Node,RBAC --allow-privileged=true \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/16 \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types Hostname \
    --profiling=false
  wait_for containerd 60 ctr --address "$SOCK" version
  import_images
  wait_for kube-apiserver 90 kubectl --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz
  start kube-controller-manager kube-controller-manager --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" --use-service-account-credentials=true \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false
  start kube-scheduler kube-scheduler --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false
  start kubelet kubelet --config "$STATE/kubelet/config.yaml" --kubeconfig "$STATE/node.kubeconfig" \
    --hostname-override localhost --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki"
  wait_for "node localhost" 120 kubectl --kubeconfig "$STATE/admin.kubeconfig" wait --for=condition=Ready node/localhost --timeout=1s
  wait_for "default ServiceAccount" 60 kubectl --kubeconfig "$STATE/admin.kubeconfig" get serviceaccount default
  log "cluster ready: export KUBECONFIG=$STATE/admin.kubeconfig"
}

import_images() {
  bash "$here/images.sh" base
  for f in "$CACHE"/images/base/*.tar; do
    ctr --address "$SOCK" -n k8s.io images import --no-unpack=false "$f" >/dev/null
  done
}

down() {
  local order=(kubelet kube-scheduler kube-controller-manager kube-apiserver containerd etcd)
  for name in "${order[@]}"; do
    local p; p=$(cat "$(pidfile "$name")" 2>/dev/null) || continue
    if kill -0 "$p" 2>/dev/null; then
      log "stopping $name ($p)"
      kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
      for ((i = 0; i < 40; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$p" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
  done
  # Shims outlive containerd by design; they run from our binary dir with our state's socket.
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null || true
  local rroot=$STATE/runc/k8s.io
  for c in $(runc --root "$rroot" list -q 2>/dev/null); do
    runc --root "$rroot" kill "$c" KILL 2>/dev/null || true
    runc --root "$rroot" delete --force "$c" 2>/dev/null || true
  done
  if [ -d "$STATE" ]; then
    grep -F " $STATE/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do
      umount -l "$(printf '%b' "$m")" 2>/dev/null || true
    done
  fi
  ip link del podcopy0 2>/dev/null || true
  rm -f "$STATE/env"
  log "cluster down"
}

# restart NAME [SECONDS]: SIGKILL a component, wait SECONDS (default 3), start it again with
# the same command line (fault injection for the e2e suite).
restart() {
  local name=$1 pause=${2:-3} pid args
  [ -f "$RUN/$name.cmd" ] || die "no recorded command line for $name (was the cluster started by this script?)"
  mapfile -d '' args < "$RUN/$name.cmd"
  pid=$(cat "$(pidfile "$name")")
  log "killing $name (pid $pid) with SIGKILL; restarting in ${pause}s"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  sleep "$pause"
  start "$name" "${args[@]}"
}

status() {
  local rc=0
  for name in "${COMPONENTS[@]}"; do
    if alive "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"; else echo "$name: stopped"; rc=1; fi
  done
  if [ -f "$STATE/env" ]; then kubectl --kubeconfig "$STATE/admin.kubeconfig" get nodes 2>/dev/null || true; fi
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kubeconfig) [ -f "$STATE/env" ] || die "no cluster; run: $0 up"; echo "$STATE/admin.kubeconfig" ;;
  env) [ -f "$STATE/env" ] || die "no cluster; run: $0 up"; cat "$STATE/env" ;;
  restart) shift; restart "$@" ;;
  *) echo "usage: $0 up|down|status|kubeconfig|env|restart NAME [SECONDS]" >&2; exit 2 ;;
esac
