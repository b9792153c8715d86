#!/usr/bin/env bash
# Builds the agent image from the Dockerfile, imports it into the local cluster and installs
# podcopy with this cluster's apiserver port.
#   hack/deploy.sh [helm|kustomize]   (default helm: charts/podcopy with ci/local-values.yaml;
#                                      kustomize: kubectl apply -k of manifests/local)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cluster/lib.sh"
[ -f "$STATE/env" ] || die "no local cluster; run: make cluster-up"
# shellcheck source=/dev/null # written by cluster.sh up
. "$STATE/env"
export KUBECONFIG PATH="$BIN:$PATH"
mode=${1:-helm}

bash "$here/cluster/images.sh" base
bash "$here/cluster/images.sh" agent
bash "$here/cluster/images.sh" testapp
bash "$here/cluster/images.sh" evidence
bash "$here/cluster/cluster.sh" import "$CACHE"/images/base/*.tar "$CACHE/images/agent.tar" "$CACHE/images/testapp.tar" "$CACHE/images/evidence.tar"
log "imported images into every node (${NODE_NAMES:-localhost})"

# The agent listens on a free port of the host network.
if [ ! -f "$STATE/agent-port" ]; then
  (cd "$REPO_ROOT" && go run ./hack/freeport 1) > "$STATE/agent-port"
fi
AGENT_PORT=$(cat "$STATE/agent-port")
if [ ! -f "$STATE/shell-port" ]; then
  (cd "$REPO_ROOT" && go run ./hack/freeport 1) > "$STATE/shell-port"
fi
SHELL_PORT=$(cat "$STATE/shell-port")
# The evidence store (helm only) serves S3 over TLS on a free port of the host network.
if [ ! -f "$STATE/evidence-port" ]; then
  (cd "$REPO_ROOT" && go run ./hack/freeport 1) > "$STATE/evidence-port"
fi
EVIDENCE_PORT=$(cat "$STATE/evidence-port")
# The alert receiver (helm only) serves its webhooks over TLS on a free port of loopback.
if [ ! -f "$STATE/receiver-port" ]; then
  (cd "$REPO_ROOT" && go run ./hack/freeport 1) > "$STATE/receiver-port"
fi
RECEIVER_PORT=$(cat "$STATE/receiver-port")
# The custody signer (helm only, a cluster of three nodes or more): on the last node, the
# "system" node, which runs no agent; TLS on a free port of loopback.
if [ ! -f "$STATE/signer-port" ]; then
  (cd "$REPO_ROOT" && go run ./hack/freeport 1) > "$STATE/signer-port"
fi
SIGNER_PORT=$(cat "$STATE/signer-port")
read -r -a node_names <<< "${NODE_NAMES:-localhost}"
signer_values=$STATE/signer-values.yaml
if [ "${#node_names[@]}" -ge 3 ]; then
  system_node=${node_names[-1]}
  cat > "$signer_values" <<YAML
signer:
  enabled: true
  hostNetwork: true
  listenHost: 127.0.0.1
  port: $SIGNER_PORT
  nodeSelector: {kubernetes.io/hostname: $system_node}
  tolerations: [{operator: Exists}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: NotIn, values: [$system_node]}]
YAML
else
  echo "signer: {enabled: false}" > "$signer_values"
fi

# Switching install methods: remove what the other one installed.
previous=$(cat "$STATE/deploy-mode" 2>/dev/null || true)
if [ -n "$previous" ] && [ "$previous" != "$mode" ]; then
  log "removing the $previous install"
  case "$previous" in
    helm) bash "$here/cluster/helm.sh" uninstall podcopy -n podcopy --wait >/dev/null || true ;;
    kustomize) kubectl delete -k "$STATE/deploy" --wait=true >/dev/null || true ;;
  esac
  kubectl delete namespace podcopy --ignore-not-found --wait=true >/dev/null
fi

case "$mode" in
  kustomize)
    mkdir -p "$STATE/deploy"
    cat > "$STATE/deploy/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$STATE/deploy" "$REPO_ROOT/manifests/local")
patches:
- target: {kind: DaemonSet, name: podcopy-agent}
  patch: |
    - op: add
      path: /spec/template/spec/containers/0/env/-
      value: {name: KUBERNETES_SERVICE_PORT, value: "$APISERVER_PORT"}
    - op: add
      path: /spec/template/spec/containers/0/env/-
      value: {name: PODCOPY_LISTEN, value: "\$(HOST_IP):$AGENT_PORT"}
    - op: replace
      path: /spec/template/spec/containers/0/ports/0/containerPort
      value: $AGENT_PORT
YAML
    kubectl apply -k "$STATE/deploy" >/dev/null
    kubectl -n podcopy rollout restart daemonset/podcopy-agent >/dev/null
    kubectl -n podcopy rollout status daemonset/podcopy-agent --timeout=120s >/dev/null
    kubectl -n podcopy rollout status statefulset/analysis --timeout=120s >/dev/null
    ;;
  helm)
    bash "$here/cluster/helm.sh" upgrade --install podcopy "$REPO_ROOT/charts/podcopy" -n podcopy --create-namespace \
      -f "$REPO_ROOT/charts/podcopy/ci/local-values.yaml" -f "$signer_values" --set "metrics.port=$AGENT_PORT" --set "shell.port=$SHELL_PORT" \
      --set "evidenceStore.port=$EVIDENCE_PORT" --set "receiver.port=$RECEIVER_PORT" \
      --set-json "extraEnv=[{\"name\":\"KUBERNETES_SERVICE_HOST\",\"value\":\"127.0.0.1\"},{\"name\":\"KUBERNETES_SERVICE_PORT\",\"value\":\"$APISERVER_PORT\"}]" \
      --wait --timeout 3m >/dev/null
    kubectl -n podcopy rollout restart daemonset/podcopy-agent >/dev/null
    kubectl -n podcopy rollout status daemonset/podcopy-agent --timeout=120s >/dev/null
    kubectl -n podcopy rollout status statefulset/podcopy-analysis --timeout=120s >/dev/null
    kubectl -n podcopy rollout status deployment/podcopy-agent-evidence --timeout=120s >/dev/null
    if grep -q "enabled: true" "$signer_values"; then
      kubectl -n podcopy rollout status deployment/podcopy-agent-signer --timeout=120s >/dev/null
    fi
    kubectl -n podcopy rollout restart deployment/podcopy-agent-receiver >/dev/null
    kubectl -n podcopy rollout status deployment/podcopy-agent-receiver --timeout=120s >/dev/null
    ;;
  *) die "usage: $0 [helm|kustomize]" ;;
esac
echo "$mode" > "$STATE/deploy-mode"
log "podcopy installed with $mode; each node's agent listens on its node's address (kubectl get nodes -o wide):"
kubectl -n podcopy get pods -l app.kubernetes.io/component=agent -o jsonpath='{range .items[*]}{.spec.nodeName}{" "}{.status.hostIP}{"\n"}{end}' |
  while read -r node ip; do
    log "  $node: metrics http://$ip:$AGENT_PORT/metrics"
    if [ "$mode" = helm ]; then log "  $node: web shell http://$ip:$SHELL_PORT/ (sign in with a token: kubectl create token <serviceaccount>)"; fi
  done
true
