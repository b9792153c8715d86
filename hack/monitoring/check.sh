#!/usr/bin/env bash
# Checks the chart's alert rules and Grafana dashboard with promtool (built once from the Go
# module proxy and cached by version): the rules as the chart renders them with its default
# thresholds pass `promtool check rules` and the unit tests in rules.test.yaml (every alert
# fires and resolves); every dashboard query parses (checked as recording rules, Grafana's
# variables replaced). That they name only metrics podcopy exports is charts/monitoring_test.go's.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../cluster/lib.sh"
PROMETHEUS_VERSION=v0.316.0 # Prometheus 3.x's Go module version
dir=$CACHE/tools/promtool-$PROMETHEUS_VERSION
if [ ! -x "$dir/promtool" ]; then
  log "go install github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION (once, several minutes)"
  mkdir -p "$dir"
  GOBIN=$dir CGO_ENABLED=0 go install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
fi
promtool=$dir/promtool
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The PrometheusRule's spec (its groups) as a plain rules file.
bash "$REPO_ROOT/hack/cluster/helm.sh" template podcopy "$REPO_ROOT/charts/podcopy" -n podcopy \
  --set metrics.rules.enabled=true --show-only templates/prometheusrule.yaml |
  awk '/^spec:/ { inspec = 1; next } inspec { sub(/^  /, ""); print }' > "$work/rules.yaml"
cp "$here/rules.test.yaml" "$work/"
"$promtool" check rules "$work/rules.yaml"
(cd "$work" && "$promtool" test rules rules.test.yaml)

# Every dashboard query, as a recording rule.
python3 - "$REPO_ROOT/charts/podcopy/dashboards/podcopy.json" > "$work/dashboard-rules.yaml" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print("groups:\n- name: dashboard\n  rules:")
n = 0
for p in d["panels"]:
    for t in p.get("targets", []):
        expr = t["expr"].replace("$__rate_interval", "5m").replace("$instance", ".*")
        n += 1
        print(f"  - record: dashboard:query{n}")
        print(f"    expr: {json.dumps(expr)}")
if n == 0:
    sys.exit("no queries in the dashboard")
PY
"$promtool" check rules "$work/dashboard-rules.yaml"
log "monitoring: rules checked and unit-tested, dashboard queries parse"
