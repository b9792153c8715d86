//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podcopy/podcopy/internal/alert"
	"github.com/podcopy/podcopy/pkg/status"
)

// TestReceiverRBAC (issue 36): with receiver.namespaces the chart grants the receiver a Role
// in those namespaces only, so its own token patches nothing elsewhere: the API server says
// 403, whatever the receiver's code would do. And an alert on a pod that is following is
// refused with why, and the follow keeps running.
func TestReceiverRBAC(t *testing.T) {
	local(t, "helm and the alert receiver on this machine")
	inside, outside := namespace(t), namespace(t)
	for _, ns := range []string{inside, outside} {
		sourcePod(t, ns, "web", imageBusybox, "mkdir -p /var/log/app && echo web > /var/log/app/app.log")
	}
	sourcePod(t, inside, "followed", imageBusybox, `mkdir -p /var/log/app && (while true; do echo tick >> /var/log/app/app.log; sleep 1; done) &`)
	annotate(t, inside, "followed", map[string]string{"podcopy/collect": "/var/log/app/app.log", "podcopy/mode": "follow", "podcopy/interval": "5s"})
	waitFor(t, time.Minute, "the follow to run", func(ctx context.Context) (bool, error) {
		s, ok := getStatus(t, inside, "followed")
		return ok && s.Phase == status.Running && s.Bytes > 0, nil
	})

	helm(t, "upgrade", "podcopy", "charts/podcopy", "-n", "podcopy", "--reuse-values",
		"--set", "receiver.clusterWide=false", "--set", "receiver.namespaces={"+inside+"}", "--wait", "--timeout", "3m")
	t.Cleanup(func() { helm(t, "rollback", "podcopy", "0", "-n", "podcopy", "--wait", "--timeout", "3m") })
	if _, err := client.RbacV1().ClusterRoleBindings().Get(t.Context(), receiverName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the receiver still holds a ClusterRoleBinding (%v)", err)
	}

	// The receiver's own token, as a thief on its node would hold it.
	tr, err := client.CoreV1().ServiceAccounts("podcopy").CreateToken(t.Context(), receiverName, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	asReceiver := kubernetes.NewForConfigOrDie(&rest.Config{Host: cfg.Host, BearerToken: tr.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData, CAFile: cfg.CAFile}})
	patch := []byte(`{"metadata":{"annotations":{"e2e/receiver-rbac":"1"}}}`)
	if _, err := asReceiver.CoreV1().Pods(inside).Patch(t.Context(), "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("the receiver may not patch a pod in its own namespace %s: %v", inside, err)
	}
	_, err = asReceiver.CoreV1().Pods(outside).Patch(t.Context(), "web", types.MergePatchType, patch, metav1.PatchOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("the receiver's token patched a pod outside receiver.namespaces, or failed otherwise: %v", err)
	}
	t.Logf("outside receiver.namespaces the API server answers: %v", err)

	// An alert on the following pod: refused, the follow untouched.
	base, token, hc := receiverClient(t)
	var res alert.Result
	waitFor(t, 2*time.Minute, "the restarted receiver to answer", func(ctx context.Context) (bool, error) {
		code, out := postAlert(t, hc, base+alert.PathFalco, token, recordedPayload(t, "falcosidekick.json", inside, "followed"))
		if code != http.StatusOK || len(out.Results) != 1 {
			return false, nil
		}
		res = out.Results[0]
		return true, nil
	})
	if res.Result != alert.ResultRefused || !strings.Contains(res.Reason, "never ends a follow") {
		t.Fatalf("an alert on a following pod: %+v", res)
	}
	time.Sleep(6 * time.Second) // a follow tick
	st, ok := getStatus(t, inside, "followed")
	p, err := client.CoreV1().Pods(inside).Get(t.Context(), "followed", metav1.GetOptions{})
	if err != nil || !ok || st.Phase != status.Running || p.Annotations["podcopy/mode"] != "follow" || p.Annotations["podcopy/alert"] != "" {
		t.Fatalf("the follow after the alert: %+v %v (%v)", st, p.Annotations, err)
	}
	t.Logf("alert on the following pod: %s: %s", res.Result, res.Reason)
}
