//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podcopy/podcopy/internal/testkit/clustertest"
	"github.com/podcopy/podcopy/pkg/status"
)

// userClient returns a client that authenticates as user with a client certificate signed by
// the cluster CA: a real user, not impersonation.
func userClient(t *testing.T, user string) kubernetes.Interface {
	t.Helper()
	return kubernetes.NewForConfigOrDie(userConfig(t, user))
}

// userConfig is a client-certificate identity, user, signed by the cluster's CA.
func userConfig(t *testing.T, user string) *rest.Config {
	t.Helper()
	local(t, "CA (client-certificate users)")
	caPEM, err := os.ReadFile(filepath.Join(state, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	caKeyPEM, err := os.ReadFile(filepath.Join(state, "pki", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	caBlock, _ := pem.Decode(caPEM)
	ca, err := x509.ParseCertificate(caBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	keyBlock, _ := pem.Decode(caKeyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		k1, err1 := x509.ParsePKCS1PrivateKey(keyBlock.Bytes)
		if err1 != nil {
			t.Fatal(err)
		}
		caKey = k1
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: user},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return &rest.Config{Host: cfg.Host, TLSClientConfig: rest.TLSClientConfig{
		CAData:   caPEM,
		CertData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyData:  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}}
}

func grant(t *testing.T, ns, user string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	bind(t, ns, "e2e-"+user, rbacv1.Subject{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}, rules...)
}

// bind makes a Role of rules in ns, named name, and binds it to subject.
func bind(t *testing.T, ns, name string, subject rbacv1.Subject, rules ...rbacv1.PolicyRule) {
	t.Helper()
	if _, err := client.RbacV1().Roles(ns).Create(t.Context(), &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
		Subjects: []rbacv1.Subject{subject}}
	if _, err := client.RbacV1().RoleBindings(ns).Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func patchAs(t *testing.T, c kubernetes.Interface, ns, pod string, ann map[string]string, subresources ...string) error {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	_, err := c.CoreV1().Pods(ns).Patch(t.Context(), pod, types.MergePatchType, patch, metav1.PatchOptions{}, subresources...)
	return err
}

// TestAdmissionPolicy proves SPEC §7 on the real apiserver: podcopy/* request annotations need
// pods/exec, and only the agent writes podcopy/status.
func TestAdmissionPolicy(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	sourcePod(t, ns, "target", imageBusybox, "mkdir -p /var/log && echo secret > /var/log/app.log")
	patchPods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch"}}
	execPods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}}
	grant(t, ns, "alice-"+ns, patchPods)
	grant(t, ns, "bob-"+ns, patchPods, execPods)
	alice, bob := userClient(t, "alice-"+ns), userClient(t, "bob-"+ns)

	// RBAC is eventually consistent in the authorizer cache; wait until alice can patch at all.
	waitFor(t, 30*time.Second, "alice's RBAC", func(ctx context.Context) (bool, error) {
		return patchAs(t, alice, ns, "target", map[string]string{"team": "payments"}) == nil, nil
	})
	err := patchAs(t, alice, ns, "target", map[string]string{"podcopy/collect": "/var/log/app.log"})
	if err == nil || !strings.Contains(err.Error(), "requires permission to create pods/exec in namespace "+ns) {
		t.Fatalf("alice (no pods/exec) annotating: err = %v", err)
	}
	t.Logf("refused as expected: %v", err)
	if err := patchAs(t, alice, ns, "target", map[string]string{"team": "checkout"}); err != nil {
		t.Fatalf("an unrelated annotation was refused: %v", err)
	}

	if err := patchAs(t, bob, ns, "target", map[string]string{"podcopy/collect": "/var/log/app.log"}); err != nil {
		t.Fatalf("bob (with pods/exec) annotating: %v", err)
	}
	st := waitFinal(t, ns, "target", "")
	if st.Phase != status.Succeeded {
		t.Fatalf("the agent's status write: %+v", st)
	}
	// Issue 14: who asked is on record, set by admission (the MutatingAdmissionPolicy), in the
	// status and the manifest; nobody can write another name.
	if m := readManifest(t, st); st.RequestedBy != "bob-"+ns || m.RequestedBy != "bob-"+ns {
		t.Fatalf("requestedBy: status %q, manifest %q, want bob-%s", st.RequestedBy, m.RequestedBy, ns)
	}
	err = patchAs(t, bob, ns, "target", map[string]string{"podcopy/requested-by": "mallory"})
	if err == nil || !strings.Contains(err.Error(), "podcopy/requested-by is written by admission") {
		t.Fatalf("bob forging podcopy/requested-by: err = %v", err)
	}
	// Issue 24: only the alert receiver says an alert started a request.
	err = patchAs(t, bob, ns, "target", map[string]string{"podcopy/collect": "/var/log/app.log", "podcopy/trigger": "alert",
		"podcopy/alert": `{"source":"falco","rule":"Terminal shell in container"}`})
	if err == nil || !strings.Contains(err.Error(), "only the alert receiver") {
		t.Fatalf("bob forging podcopy/alert: err = %v", err)
	}
	if err := patchAs(t, bob, ns, "target", map[string]string{"podcopy/collect": "/var/log/app.log", "podcopy/trigger": "again", "podcopy/requested-by": "mallory"}); err != nil {
		t.Fatalf("bob re-running with a forged requested-by alongside: %v", err)
	}
	if p, err := client.CoreV1().Pods(ns).Get(t.Context(), "target", metav1.GetOptions{}); err != nil || p.Annotations["podcopy/requested-by"] != "bob-"+ns {
		t.Fatalf("requested-by after a forged value: %v %v", p.Annotations["podcopy/requested-by"], err)
	}
	t.Logf("requested-by: %s (a forged value is replaced or refused)", st.RequestedBy)
	st = waitFinal(t, ns, "target", st.Request)
	forged, _ := json.Marshal(status.Status{Request: "forged", Phase: status.Succeeded})
	err = patchAs(t, bob, ns, "target", map[string]string{status.Annotation: string(forged)})
	if err == nil || !strings.Contains(err.Error(), "only the podcopy agent") {
		t.Fatalf("bob forging podcopy/status: err = %v", err)
	}

	// Issue 11: pods/status persists metadata on 1.37, so it is a second way in. Carol may
	// patch only pods/status: a request and a forged status are both refused there too.
	grant(t, ns, "carol-"+ns, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/status"}, Verbs: []string{"get", "patch"}})
	carol := userClient(t, "carol-"+ns)
	waitFor(t, 30*time.Second, "carol's RBAC", func(ctx context.Context) (bool, error) {
		return patchAs(t, carol, ns, "target", map[string]string{"team": "status-only"}, "status") == nil, nil
	})
	err = patchAs(t, carol, ns, "target", map[string]string{"podcopy/collect": "/var/log/other.log"}, "status")
	if err == nil || !strings.Contains(err.Error(), "(through pods/status) requires permission to create pods/exec") {
		t.Fatalf("carol (pods/status only) setting a request: err = %v", err)
	}
	err = patchAs(t, carol, ns, "target", map[string]string{status.Annotation: string(forged)}, "status")
	if err == nil || !strings.Contains(err.Error(), "only the podcopy agent") {
		t.Fatalf("carol forging podcopy/status through pods/status: err = %v", err)
	}
	t.Logf("pods/status refused as expected: %v", err)
	pod, err := client.CoreV1().Pods(ns).Get(t.Context(), "target", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Annotations["podcopy/collect"] != "/var/log/app.log" || pod.Annotations["team"] != "status-only" {
		t.Fatalf("annotations after the refused patches: %v", pod.Annotations)
	}

	// pods/binding copies the Binding's annotations onto an unscheduled pod.
	unscheduled := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "unscheduled"},
		Spec: corev1.PodSpec{SchedulerName: "nobody", Containers: []corev1.Container{{Name: "app", Image: imageBusybox, ImagePullPolicy: corev1.PullNever}}}}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), unscheduled, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	grant(t, ns, "dave-"+ns, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/binding"}, Verbs: []string{"create"}})
	dave := userClient(t, "dave-"+ns)
	binding := &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "unscheduled", Annotations: map[string]string{"podcopy/collect": "/var/log/app.log"}},
		Target: corev1.ObjectReference{Kind: "Node", Name: "localhost"}}
	waitFor(t, 30*time.Second, "dave's binding refused by the policy (not RBAC)", func(ctx context.Context) (bool, error) {
		err := dave.CoreV1().Pods(ns).Bind(ctx, binding, metav1.CreateOptions{})
		if err == nil {
			return false, errors.New("a binding carrying podcopy/collect was admitted")
		}
		return strings.Contains(err.Error(), "(through pods/binding) requires permission to create pods/exec"), nil
	})
}

// TestAdmissionOnCreate (issue 20): a pod created with a preset podcopy/status, or with a
// podcopy/requested-by or podcopy/request-origin of its own, is refused; a pod created with a
// request (as a template would) is admitted and recorded honestly: the creating identity and
// origin "creation", in the status and the manifest. Erin may create pods but not exec.
func TestAdmissionOnCreate(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	user := "erin-" + ns
	grant(t, ns, user, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "create"}})
	erin := userClient(t, user)
	create := func(name string, ann map[string]string) error {
		p := clustertest.SourcePod(ns, name, imageBusybox, "mkdir -p /var/log && echo created > /var/log/app.log")
		p.Annotations = ann
		_, err := erin.CoreV1().Pods(ns).Create(t.Context(), p, metav1.CreateOptions{})
		return err
	}
	waitFor(t, 30*time.Second, "erin's RBAC", func(ctx context.Context) (bool, error) {
		return create("plain", nil) == nil, nil
	})
	forged, _ := json.Marshal(status.Status{Request: "forged", Phase: status.Succeeded, Collection: "../escaped",
		Destination: ns + "/plain/app:/fake"})
	for _, tc := range []struct {
		name string
		ann  map[string]string
		want string
	}{
		{name: "forged-status", ann: map[string]string{status.Annotation: string(forged)}, want: "only the podcopy agent"},
		{name: "forged-status-with-request", ann: map[string]string{"podcopy/collect": "/var/log/app.log", status.Annotation: string(forged)}, want: "only the podcopy agent"},
		{name: "forged-requested-by", ann: map[string]string{"podcopy/requested-by": "mallory"}, want: "podcopy/requested-by is written by admission"},
		{name: "forged-origin", ann: map[string]string{"podcopy/request-origin": "update"}, want: "podcopy/request-origin is written by admission"},
	} {
		err := create(tc.name, tc.ann)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("creating a pod with %v: err = %v, want %q", tc.ann, err, tc.want)
		}
		t.Logf("%s refused: %v", tc.name, err)
	}
	// A request that comes with the pod (a template's): admitted, recorded as erin's, at creation,
	// even when the template carries someone else's name.
	if err := create("templated", map[string]string{"podcopy/collect": "/var/log/app.log", "podcopy/requested-by": "mallory"}); err != nil {
		t.Fatalf("creating a pod with a request: %v", err)
	}
	p, err := client.CoreV1().Pods(ns).Get(t.Context(), "templated", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Annotations["podcopy/requested-by"] != user || p.Annotations["podcopy/request-origin"] != "creation" {
		t.Fatalf("annotations after creation: %v", p.Annotations)
	}
	if err := clustertest.WaitReady(t.Context(), client, ns, "templated", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	st := waitFinal(t, ns, "templated", "")
	if st.Phase != status.Succeeded || st.RequestedBy != user || st.RequestOrigin != "creation" || st.Reason != "Collected" || st.ManifestSHA256 == "" {
		t.Fatalf("status %+v", st)
	}
	if m := readManifest(t, st); m.RequestedBy != user || m.RequestOrigin != "creation" {
		t.Fatalf("manifest requestedBy %q origin %q", m.RequestedBy, m.RequestOrigin)
	}
}
