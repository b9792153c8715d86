#!/usr/bin/env bash
# A real Kubernetes cluster on this machine, built from source: one control plane and NODES
# nodes (default 3), each node its own containerd and kubelet (see README "The local cluster").
# The third node is the "system" node: the custody signer runs there, and no agent (it certifies
# no agent on its own node; hack/deploy.sh installs it when the cluster has three nodes).
# Usage: cluster.sh up|down|status|kubeconfig|env|restart|stop|resume|import
#   NODES=1 cluster.sh up   a single node (the quick demo)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

PKI=$STATE/pki
LOGS=$STATE/logs
RUN=$STATE/run
SOCK=$STATE/containerd/containerd.sock
PATH=$BIN:$PATH
COMPONENTS=(etcd containerd kube-apiserver kubelet kube-controller-manager kube-scheduler)
# Every node has an address of its own on the loopback interface (198.18.0.0/15 is reserved for
# benchmarking networks, RFC 2544, so it collides with nothing real): its kubelet listens there,
# it is the Node's InternalIP (the API server dials kubelets by it), and an agent on the host
# network binds its ports there, so two nodes' agents never collide.
NODE_NET=${PODCOPY_NODE_NET:-198.18.0}
node_ip() { echo "$NODE_NET.$1"; }
# Node 1 is "localhost" with the paths of the single-node cluster; node N >= 2 is "nodeN" under
# $STATE/nodeN, its components named containerd-nodeN and kubelet-nodeN.
node_name() { if [ "$1" = 1 ]; then echo localhost; else echo "node$1"; fi; }
node_dir() { if [ "$1" = 1 ]; then echo "$STATE"; else echo "$STATE/node$1"; fi; }
node_suffix() { if [ "$1" = 1 ]; then echo ""; else echo "-node$1"; fi; }
node_sock() { echo "$(node_dir "$1")/containerd/containerd.sock"; }
# Extra nodes carry this taint: workloads that do not ask for a node keep to the first one (the
# demo, scripts that import an image into one node), the agent tolerates every taint, and the
# e2e suite pins its pods to a node by name.
EXTRA_NODE_TAINT=podcopy.dev/extra-node=true:NoSchedule

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
  for ((n = 1; n <= NODES; n++)); do
    local name; name=$(node_name "$n")
    cert "node$(node_suffix "$n")" "system:node:$name" system:nodes
    cert "kubelet-serving$(node_suffix "$n")" "$name" "" "DNS:$name,IP:$(node_ip "$n"),IP:127.0.0.1"
  done
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

write_configs() { # node
  local n=$1 d; d=$(node_dir "$1")
  local sock; sock=$(node_sock "$n")
  local sfx; sfx=$(node_suffix "$n")
  mkdir -p "$d/containerd" "$d/cni/net.d" "$d/cni/ipam" "$d/kubelet" "$d/pod-logs"
  cat > "$d/containerd/config.toml" <<TOML
version = 3
root = "$d/containerd/root"
state = "$d/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$d/runc"
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$d/cni/net.d"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
TOML
  # One bridge and /24 per node; the host routes between them.
  cat > "$d/cni/net.d/10-podcopy.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "podcopy-local", "plugins": [
  {"type": "bridge", "bridge": "podcopy$((n - 1))", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$d/cni/ipam", "ranges": [[{"subnet": "10.244.$((n - 1)).0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON
  local cgroup_root=""
  if [ "$n" != 1 ]; then
    # Two kubelets on one machine must not share /kubepods: extra nodes get a cgroup root of
    # their own, which the kubelet wants to exist (cgroup v1: in every controller).
    cgroup_root="cgroupRoot: /node$n"
    make_cgroups "node$n"
  fi
  cat > "$d/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $(node_ip "$n")
port: $KUBELET_PORT
healthzBindAddress: $(node_ip "$n")
healthzPort: $KUBELET_HEALTHZ_PORT
readOnlyPort: 0
cgroupDriver: cgroupfs
$cgroup_root
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
podLogsDir: $d/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving$sfx.crt
tlsPrivateKeyFile: $PKI/kubelet-serving$sfx.key
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

# make_cgroups NAME / remove_cgroups NAME: a cgroup (v1: one per controller, v2: one) for an extra node.
make_cgroups() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then mkdir -p "/sys/fs/cgroup/$1"; return; fi
  for c in /sys/fs/cgroup/*/; do
    [ -L "${c%/}" ] && continue
    mkdir -p "$c$1" 2>/dev/null || true
  done
}
remove_cgroups() {
  # Children first (kubepods/...), then the node's own directory.
  find /sys/fs/cgroup/ -mindepth 2 -maxdepth 12 -type d -path "*/$1*" 2>/dev/null | awk '{print length, $0}' |
    sort -rn | cut -d' ' -f2- | while read -r d; do rmdir "$d" 2>/dev/null || true; done
  find /sys/fs/cgroup/ -mindepth 1 -maxdepth 2 -type d -name "$1" -exec rmdir {} + 2>/dev/null || true
}

add_node_ips() {
  for ((n = 1; n <= NODES; n++)); do
    ip addr replace "$(node_ip "$n")/32" dev lo
  done
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
  NODES=${NODES:-3}
  [[ "$NODES" =~ ^[1-9]$ ]] || die "NODES must be 1 to 9, got $NODES"
  bash "$here/build.sh"
  rm -rf "$STATE"; mkdir -p "$STATE" "$LOGS" "$RUN"
  read -r APISERVER_PORT ETCD_PORT ETCD_PEER_PORT KUBELET_PORT KUBELET_HEALTHZ_PORT KCM_PORT SCHED_PORT <<<"$(free_ports 7)"
  PAUSE_IMAGE=podcopy.local/pause:1
  local socks="" names=""
  for ((n = 1; n <= NODES; n++)); do socks="$socks $(node_sock "$n")"; names="$names $(node_name "$n")"; done
  cat > "$STATE/env" <<ENV
APISERVER_PORT=$APISERVER_PORT
ETCD_PORT=$ETCD_PORT
KUBELET_PORT=$KUBELET_PORT
PAUSE_IMAGE=$PAUSE_IMAGE
KUBECONFIG=$STATE/admin.kubeconfig
CONTAINERD_SOCK=$SOCK
NODES=$NODES
NODE_NAMES="${names# }"
CONTAINERD_SOCKS="${socks# }"
BIN=$BIN
STATE=$STATE
ENV
  gen_pki
  kubeconfig_for admin admin
  for ((n = 1; n <= NODES; n++)); do
    kubeconfig_for "node$(node_suffix "$n")" "node$(node_suffix "$n")"
    write_configs "$n"
  done
  kubeconfig_for controller-manager controller-manager
  kubeconfig_for scheduler scheduler
  add_node_ips

  start etcd etcd --name local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" --log-level warn
  start kube-apiserver kube-apiserver --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --secure-port "$APISERVER_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --endpoint-reconciler-type none --authorization-mode Node,RBAC --allow-privileged=true \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.96.0.0/16 \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
    --profiling=false
  for ((n = 1; n <= NODES; n++)); do
    local sfx; sfx=$(node_suffix "$n")
    start "containerd$sfx" containerd --config "$(node_dir "$n")/containerd/config.toml"
  done
  for ((n = 1; n <= NODES; n++)); do
    wait_for "containerd$(node_suffix "$n")" 60 ctr --address "$(node_sock "$n")" version
    import_images "$(node_sock "$n")"
  done
  wait_for kube-apiserver 90 kubectl --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz
  # A node is NotReady 20 s after its kubelet stops posting (the default is 50 s): node-loss
  # outcomes in the e2e suite (see README "Node loss") then take well under a minute to show.
  start kube-controller-manager kube-controller-manager --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" --use-service-account-credentials=true \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false --node-monitor-grace-period 20s
  start kube-scheduler kube-scheduler --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHED_PORT" --leader-elect=false
  for ((n = 1; n <= NODES; n++)); do
    local d sfx taint=(); d=$(node_dir "$n"); sfx=$(node_suffix "$n")
    [ "$n" != 1 ] && taint=(--register-with-taints "$EXTRA_NODE_TAINT")
    start "kubelet$sfx" kubelet --config "$d/kubelet/config.yaml" --kubeconfig "$STATE/node$sfx.kubeconfig" \
      --hostname-override "$(node_name "$n")" --node-ip "$(node_ip "$n")" --root-dir "$d/kubelet" --cert-dir "$d/kubelet/pki" "${taint[@]}"
  done
  for ((n = 1; n <= NODES; n++)); do
    wait_for "node $(node_name "$n")" 120 kubectl --kubeconfig "$STATE/admin.kubeconfig" wait --for=condition=Ready "node/$(node_name "$n")" --timeout=1s
  done
  wait_for "default ServiceAccount" 60 kubectl --kubeconfig "$STATE/admin.kubeconfig" get serviceaccount default
  log "cluster ready ($NODES node(s):${names}): export KUBECONFIG=$STATE/admin.kubeconfig"
}

import_images() { # socket
  bash "$here/images.sh" base
  for f in "$CACHE"/images/base/*.tar; do
    ctr --address "$1" -n k8s.io images import --no-unpack=false "$f" >/dev/null
  done
}

# import FILE...: import image archives into every node's containerd.
import() {
  [ -f "$STATE/env" ] || die "no cluster; run: $0 up"
  local socks
  # shellcheck source=/dev/null # written by up
  socks=$(. "$STATE/env"; echo "${CONTAINERD_SOCKS:-$CONTAINERD_SOCK}")
  for f in "$@"; do
    for sock in $socks; do
      ctr --address "$sock" -n k8s.io images import "$f" >/dev/null 2>"$LOGS/ctr-import.log" ||
        { cat "$LOGS/ctr-import.log" >&2; die "importing $f into $sock"; }
    done
  done
}

# nodes_on_disk: the node numbers whose state exists (also when env is gone).
nodes_on_disk() {
  echo 1
  for d in "$STATE"/node[2-9]; do [ -d "$d" ] && echo "${d##*/node}"; done
}

down() {
  local nodes; mapfile -t nodes < <(nodes_on_disk)
  # Extra Node objects go while the API server still answers (the next `up` starts from an
  # empty etcd anyway).
  if alive kube-apiserver; then
    for n in "${nodes[@]}"; do
      [ "$n" = 1 ] && continue
      kubectl --kubeconfig "$STATE/admin.kubeconfig" delete node "$(node_name "$n")" --wait=false --request-timeout=10s >/dev/null 2>&1 || true
    done
  fi
  local order=()
  for n in "${nodes[@]}"; do order+=("kubelet$(node_suffix "$n")"); done
  order+=(kube-scheduler kube-controller-manager kube-apiserver)
  for n in "${nodes[@]}"; do order+=("containerd$(node_suffix "$n")"); done
  order+=(etcd)
  for name in "${order[@]}"; do
    local p; p=$(cat "$(pidfile "$name")" 2>/dev/null) || continue
    if kill -0 "$p" 2>/dev/null; then
      log "stopping $name ($p)"
      kill -CONT -- "-$p" 2>/dev/null || true # a stopped component (cluster.sh stop) must see the TERM
      kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null || true
      for ((i = 0; i < 40; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$p" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
  done
  for n in "${nodes[@]}"; do
    local d sock; d=$(node_dir "$n"); sock=$(node_sock "$n")
    # Shims outlive containerd by design; they run from our binary dir with our state's socket.
    pkill -KILL -f "containerd-shim-runc-v2 .*-address $sock" 2>/dev/null || true
    local rroot=$d/runc/k8s.io
    for c in $(runc --root "$rroot" list -q 2>/dev/null); do
      runc --root "$rroot" kill "$c" KILL 2>/dev/null || true
      runc --root "$rroot" delete --force "$c" 2>/dev/null || true
    done
  done
  if [ -d "$STATE" ]; then
    grep -F " $STATE/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do
      umount -l "$(printf '%b' "$m")" 2>/dev/null || true
    done
  fi
  for n in "${nodes[@]}"; do
    ip link del "podcopy$((n - 1))" 2>/dev/null || true
    ip addr del "$(node_ip "$n")/32" dev lo 2>/dev/null || true
    [ "$n" = 1 ] || remove_cgroups "node$n"
  done
  rm -f "$STATE/env"
  log "cluster down"
}

# restart NAME [SECONDS]: SIGKILL a component, wait SECONDS (default 3), start it again with
# the same command line (fault injection for the e2e suite). NAME: etcd, kube-apiserver,
# containerd, kubelet (node 1), containerd-node2, kubelet-node2, ...
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

# stop NAME: SIGKILL a component and leave it down (a node that does not come back);
# resume NAME starts it again with its recorded command line.
stop() {
  local name=$1 pid
  [ -f "$RUN/$name.cmd" ] || die "no recorded command line for $name"
  pid=$(cat "$(pidfile "$name")" 2>/dev/null) || { log "$name is not running"; return 0; }
  log "killing $name (pid $pid) with SIGKILL; it stays down until: $0 resume $name"
  kill -KILL "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$(pidfile "$name")"
}
resume() {
  local name=$1 args
  [ -f "$RUN/$name.cmd" ] || die "no recorded command line for $name"
  if alive "$name"; then log "$name is running"; return 0; fi
  mapfile -d '' args < "$RUN/$name.cmd"
  start "$name" "${args[@]}"
}

status() {
  local rc=0 names=("${COMPONENTS[@]}")
  for n in $(nodes_on_disk); do
    [ "$n" = 1 ] || names+=("containerd$(node_suffix "$n")" "kubelet$(node_suffix "$n")")
  done
  for name in "${names[@]}"; do
    if alive "$name"; then echo "$name: running (pid $(cat "$(pidfile "$name")"))"; else echo "$name: stopped"; rc=1; fi
  done
  if [ -f "$STATE/env" ]; then kubectl --kubeconfig "$STATE/admin.kubeconfig" get nodes -o wide 2>/dev/null || true; fi
  return $rc
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  kubeconfig) [ -f "$STATE/env" ] || die "no cluster; run: $0 up"; echo "$STATE/admin.kubeconfig" ;;
  env) [ -f "$STATE/env" ] || die "no cluster; run: $0 up"; cat "$STATE/env" ;;
  restart) shift; restart "$@" ;;
  stop) shift; stop "$@" ;;
  resume) shift; resume "$@" ;;
  import) shift; import "$@" ;;
  *) echo "usage: $0 up|down|status|kubeconfig|env|restart NAME [SECONDS]|stop NAME|resume NAME|import FILE..." >&2; exit 2 ;;
esac
