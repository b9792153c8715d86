// Package charts holds the Helm chart; this test keeps README's values table true.
package charts

import (
	"encoding/json"

	"os"
	"regexp"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

// opaque values are documented as a whole, not key by key.
var opaque = []string{"resources", "podSecurityContext", "securityContext", "nodeSelector", "affinity", "podAnnotations",
	"serviceAccount.annotations", "metrics.serviceMonitor.labels", "analysis.resources", "tolerations", "imagePullSecrets",
	"extraEnv", "receiver.profiles", "config.namespaces", "config.policy.allowPaths", "config.policy.denyPaths"}

func flatten(prefix string, v map[string]any, out map[string]string) {
	for k, x := range v {
		key := prefix + k
		if m, ok := x.(map[string]any); ok && len(m) > 0 && !slices.Contains(opaque, key) {
			flatten(key+".", m, out)
			continue
		}
		if s, ok := x.(string); ok {
			out[key] = s
			continue
		}
		b, _ := json.Marshal(x)
		out[key] = string(b)
	}
}

func TestReadmeValuesTable(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("podcopy/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	flatten("", values, want)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-zA-Z0-9.]+)` \\| (?:`([^`]*)`)? *\\|")
	got := map[string]string{}
	for _, m := range row.FindAllStringSubmatch(string(readme), -1) {
		got[m[1]] = m[2]
		var v any // objects in the table are compared as JSON, whatever their key order
		if json.Unmarshal([]byte(m[2]), &v) == nil {
			if _, isMap := v.(map[string]any); isMap {
				b, _ := json.Marshal(v)
				got[m[1]] = string(b)
			}
		}
	}
	for k, v := range want {
		d, ok := got[k]
		switch {
		case !ok:
			t.Errorf("values.yaml key %s is missing from README's chart values table", k)
		case d != v:
			t.Errorf("README says %s defaults to %q; values.yaml has %q", k, d, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && regexp.MustCompile(`^[a-z][a-zA-Z0-9]*(\.[a-zA-Z0-9]+)*$`).MatchString(k) && isChartKey(k) {
			t.Errorf("README documents chart value %s, which values.yaml does not have", k)
		}
	}
}

// isChartKey tells the chart values table's rows from the agent config table's, which share
// some names (the agent's table has keys like policy.maxBytes, the chart's config.policy.maxBytes).
func isChartKey(k string) bool {
	for _, p := range []string{"image.", "config.", "metrics.", "analysis.", "admissionPolicy.", "serviceAccount."} {
		if len(k) > len(p) && k[:len(p)] == p {
			return true
		}
	}
	return slices.Contains([]string{"mode", "hostNetwork", "extraEnv", "podAnnotations", "nodeSelector", "tolerations", "affinity",
		"priorityClassName", "terminationGracePeriodSeconds", "resources", "podSecurityContext", "securityContext", "imagePullSecrets"}, k)
}
