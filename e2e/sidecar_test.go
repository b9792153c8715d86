//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/exec"
)

const imageAgent = "podcopy.local/podcopy-agent:dev"

// clusterEnv reads a value of the local cluster's env file (APISERVER_PORT, ...).
func clusterEnv(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return v
		}
	}
	t.Fatalf("%s not in the cluster env", key)
	return ""
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// TestFollowSidecar runs the follow scenario with podcopy-agent --mode=sidecar as a native
// sidecar of the writer, bound by the chart's sidecar Role (exec on the analysis pod only),
// and kills the sidecar with SIGKILL mid-way (no drain: it resumes from the destination).
func TestFollowSidecar(t *testing.T) {
	ns := namespace(t)
	dst := analysis(t)
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "writer"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-sidecar-" + ns, Namespace: "podcopy"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "podcopy-agent-sidecar"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "writer"}},
	}
	if _, err := client.RbacV1().RoleBindings("podcopy").Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.RbacV1().RoleBindings("podcopy").Delete(context.Background(), rb.Name, metav1.DeleteOptions{})
	})
	port := freePort(t)
	always := corev1.ContainerRestartPolicyAlways
	zero, nonRoot := int64(0), int64(65532)
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	logs := []corev1.VolumeMount{{Name: "logs", MountPath: "/var/log/app"}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "writer"},
		Spec: corev1.PodSpec{
			ServiceAccountName:            "writer",
			TerminationGracePeriodSeconds: &zero,
			ShareProcessNamespace:         new(true), // lets the test kill the sidecar from the app container
			HostNetwork:                   true,      // the local cluster's API server is on 127.0.0.1
			Volumes:                       []corev1.Volume{{Name: "logs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{
				Name: "podcopy", Image: imageAgent, ImagePullPolicy: corev1.PullNever, RestartPolicy: &always,
				Args: []string{"--mode=sidecar", "--follow=/var/log/app/app.log", "--container=app", "--interval=5s",
					"--destination-pod=" + dst.Pod, "--listen=127.0.0.1:" + port, "--log-level=debug"},
				Env: []corev1.EnvVar{
					{Name: "POD_NAMESPACE", ValueFrom: field("metadata.namespace")},
					{Name: "POD_NAME", ValueFrom: field("metadata.name")},
					{Name: "POD_UID", ValueFrom: field("metadata.uid")},
					{Name: "KUBERNETES_SERVICE_HOST", Value: "127.0.0.1"},
					{Name: "KUBERNETES_SERVICE_PORT", Value: clusterEnv(t, "APISERVER_PORT")},
				},
				VolumeMounts:    logs,
				SecurityContext: &corev1.SecurityContext{RunAsUser: &nonRoot, RunAsNonRoot: new(true), ReadOnlyRootFilesystem: new(true)},
			}},
			Containers: []corev1.Container{{
				Name: "app", Image: imageBusybox, ImagePullPolicy: corev1.PullNever,
				Command:      []string{"/bin/sh", "-c", "set -e\n" + writerScript + "\nexec sleep 2147483647"},
				VolumeMounts: logs,
			}},
		},
	}
	if _, err := client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "writer pod running", func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, "writer", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodRunning, nil
	})
	src := exec.Target{Namespace: ns, Pod: "writer", Container: "app"}
	t.Cleanup(func() {
		if t.Failed() {
			for _, previous := range []bool{true, false} {
				b, _ := client.CoreV1().Pods(ns).GetLogs("writer", &corev1.PodLogOptions{Container: "podcopy", Previous: previous}).DoRaw(context.Background())
				t.Logf("sidecar log (previous=%v):\n%s", previous, b)
			}
		}
	})
	restarts := func() int32 {
		p, err := client.CoreV1().Pods(ns).Get(t.Context(), "writer", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, cs := range p.Status.InitContainerStatuses {
			if cs.Name == "podcopy" {
				return cs.RestartCount
			}
		}
		return -1
	}
	followScenario{
		src: src, interval: 5 * time.Second,
		dest: fmt.Sprintf("/collect/%s/writer/follow/app/var/log/app/app.log", ns),
		disrupt: func(t *testing.T) {
			before := restarts()
			mustRun(t, src, "sh", "-c", "kill -9 $(pidof podcopy-agent)")
			t.Log("killed the sidecar with SIGKILL")
			waitFor(t, 2*time.Minute, "the sidecar to restart", func(ctx context.Context) (bool, error) { return restarts() > before, nil })
		},
	}.run(t)
	metrics := scrapeAt(t, "127.0.0.1:"+port)
	key := `podcopy_follow_rotations_total{kind="rename"}`
	t.Logf("sidecar metrics after the restart: rotations %v, lag %v bytes, lost %v bytes", metrics[key],
		metrics[fmt.Sprintf(`podcopy_follow_lag_bytes{container="app",namespace="%s",path="/var/log/app/app.log",pod="writer"}`, ns)],
		metrics["podcopy_follow_lost_bytes_total"])
	if metrics["podcopy_follow_lost_bytes_total"] != 0 {
		t.Fatalf("lost bytes reported: %v", metrics["podcopy_follow_lost_bytes_total"])
	}
}
