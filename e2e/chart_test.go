//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// render runs a command that prints YAML documents and returns them by "Kind/name".
func render(t *testing.T, name string, args ...string) map[string][]byte {
	t.Helper()
	cmd := osexec.Command(name, args...)
	cmd.Dir = ".."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	docs := map[string][]byte{}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var meta struct {
			Kind     string `json:"kind"`
			Metadata struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil || meta.Kind == "" {
			continue
		}
		docs[meta.Kind+"/"+meta.Metadata.Name] = doc
	}
	return docs
}

func helmBin() string { return filepath.Join("hack", "cluster", "helm.sh") } // relative to the repo root (cmd.Dir)

func kubectlBin(t *testing.T) string {
	t.Helper()
	if foreign {
		bin, err := osexec.LookPath("kubectl")
		if err != nil {
			t.Skipf("kubectl is not on PATH: %v", err)
		}
		return bin
	}
	env, err := os.ReadFile(filepath.Join(state, "env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(env), "\n") {
		if v, ok := strings.CutPrefix(line, "BIN="); ok {
			return filepath.Join(v, "kubectl")
		}
	}
	t.Fatal("BIN not in cluster env")
	return ""
}

func decode[T any](t *testing.T, doc []byte) T {
	t.Helper()
	var v T
	if doc == nil {
		t.Fatalf("document missing")
	}
	if err := yaml.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestChartMatchesManifests keeps charts/podcopy and manifests/base from drifting: same RBAC
// rules, same agent pod spec (but the image), same admission policy.
func TestChartMatchesManifests(t *testing.T) {
	t.Parallel()
	chart := render(t, "bash", helmBin(), "template", "podcopy", "charts/podcopy", "-n", "podcopy")
	kust := render(t, kubectlBin(t), "kustomize", "manifests/base")

	if a, b := decode[rbacv1.ClusterRole](t, chart["ClusterRole/podcopy-agent"]), decode[rbacv1.ClusterRole](t, kust["ClusterRole/podcopy-agent"]); !reflect.DeepEqual(a.Rules, b.Rules) {
		t.Errorf("ClusterRole rules differ:\nchart %+v\nmanifests %+v", a.Rules, b.Rules)
	}
	if a, b := decode[rbacv1.Role](t, chart["Role/podcopy-agent-janitor"]), decode[rbacv1.Role](t, kust["Role/podcopy-agent-janitor"]); !reflect.DeepEqual(a.Rules, b.Rules) {
		t.Errorf("janitor Role rules differ:\nchart %+v\nmanifests %+v", a.Rules, b.Rules)
	}
	ds := func(doc []byte) appsv1.DaemonSet {
		d := decode[appsv1.DaemonSet](t, doc)
		c := &d.Spec.Template.Spec.Containers[0]
		c.Image, c.ImagePullPolicy = "", ""
		return d
	}
	a, b := ds(chart["DaemonSet/podcopy-agent"]), ds(kust["DaemonSet/podcopy-agent"])
	if !reflect.DeepEqual(a.Spec.Template.Spec.Containers, b.Spec.Template.Spec.Containers) {
		ay, _ := yaml.Marshal(a.Spec.Template.Spec.Containers)
		by, _ := yaml.Marshal(b.Spec.Template.Spec.Containers)
		t.Errorf("agent container differs:\nchart:\n%s\nmanifests:\n%s", ay, by)
	}
	for name, pair := range map[string][2]any{
		"pod securityContext": {a.Spec.Template.Spec.SecurityContext, b.Spec.Template.Spec.SecurityContext},
		"volumes":             {a.Spec.Template.Spec.Volumes, b.Spec.Template.Spec.Volumes},
		"serviceAccountName":  {a.Spec.Template.Spec.ServiceAccountName, b.Spec.Template.Spec.ServiceAccountName},
		"tolerations":         {a.Spec.Template.Spec.Tolerations, b.Spec.Template.Spec.Tolerations},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			t.Errorf("%s differs: chart %+v, manifests %+v", name, pair[0], pair[1])
		}
	}
	pa := decode[admissionv1.ValidatingAdmissionPolicy](t, chart["ValidatingAdmissionPolicy/podcopy-annotations"])
	pb := decode[admissionv1.ValidatingAdmissionPolicy](t, kust["ValidatingAdmissionPolicy/podcopy-annotations"])
	// kustomize re-folds long CEL strings; compare with whitespace collapsed.
	flat := func(v any) string { b, _ := json.Marshal(v); return strings.Join(strings.Fields(string(b)), " ") }
	if flat(pa.Spec) != flat(pb.Spec) {
		t.Errorf("admission policies differ:\nchart %s\nmanifests %s", flat(pa.Spec), flat(pb.Spec))
	}
	ma := decode[admissionv1.MutatingAdmissionPolicy](t, chart["MutatingAdmissionPolicy/podcopy-requested-by"])
	mb := decode[admissionv1.MutatingAdmissionPolicy](t, kust["MutatingAdmissionPolicy/podcopy-requested-by"])
	if flat(ma.Spec) != flat(mb.Spec) || len(ma.Spec.Mutations) != 1 {
		t.Errorf("requested-by policies differ:\nchart %s\nmanifests %s", flat(ma.Spec), flat(mb.Spec))
	}
}

// TestChartSchema: a typo in values fails the install instead of being ignored.
func TestChartSchema(t *testing.T) {
	t.Parallel()
	for _, set := range []string{"confg.concurrency=2", "config.compression=zstd", "mode=everywhere", "config.policy.allowPaths={var/log}"} {
		cmd := osexec.Command("bash", helmBin(), "template", "podcopy", "charts/podcopy", "--set", set)
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "schema") {
			t.Errorf("--set %s: err = %v, output %s", set, err, out)
		}
	}
	// Deployment mode renders a single replica serving all nodes (no NODE_NAME).
	docs := render(t, "bash", helmBin(), "template", "podcopy", "charts/podcopy", "-n", "podcopy", "--set", "mode=deployment")
	d := decode[appsv1.Deployment](t, docs["Deployment/podcopy-agent"])
	if *d.Spec.Replicas != 1 {
		t.Errorf("deployment mode: %d replicas", *d.Spec.Replicas)
	}
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == "NODE_NAME" {
			t.Errorf("deployment mode sets NODE_NAME: %+v", e)
		}
	}
}
