//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/pkg/exec"
)

const imageAgent = "podcopy.local/podcopy-agent:dev"

// TestFollowSidecar runs the follow scenario through the podcopy sidecar: a native sidecar
// that shares the writer's log volume and holds only the podcopy binary (no shell). The
// workload has no Kubernetes rights and no token; the node's agent reads through the sidecar
// (podcopy/source=helper) and is the only writer to the analysis pod. The sidecar is killed
// with SIGKILL mid-way: the agent resumes from the destination's checkpoint.
func TestFollowSidecar(t *testing.T) {
	ns := namespace(t)
	always := corev1.ContainerRestartPolicyAlways
	zero, nonRoot := int64(0), int64(65532)
	logs := []corev1.VolumeMount{{Name: "logs", MountPath: "/var/log/app"}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "writer", Annotations: map[string]string{
			"podcopy/collect": "/var/log/app/app.log", "podcopy/mode": "follow", "podcopy/interval": "5s",
			"podcopy/container": "podcopy", "podcopy/source": "helper",
		}},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  new(false), // the workload needs no rights at all
			TerminationGracePeriodSeconds: &zero,
			ShareProcessNamespace:         new(true), // lets the test kill the sidecar from the app container
			Volumes:                       []corev1.Volume{{Name: "logs", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			InitContainers: []corev1.Container{{
				Name: "podcopy", Image: imageAgent, ImagePullPolicy: corev1.PullNever, RestartPolicy: &always,
				Args:            []string{"--mode=sidecar"},
				VolumeMounts:    []corev1.VolumeMount{{Name: "logs", MountPath: "/var/log/app", ReadOnly: true}},
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
			st, _ := getStatus(t, ns, "writer")
			t.Logf("status: %+v; events: %v", st, events(t, ns, "writer"))
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
		dest: followDest(t, ns, "writer", "podcopy", "/var/log/app/app.log"),
		disrupt: func(t *testing.T) {
			before := restarts()
			mustRun(t, src, "sh", "-c", "kill -9 $(pidof podcopy-agent)")
			t.Log("killed the sidecar with SIGKILL")
			waitFor(t, 2*time.Minute, "the sidecar to restart", func(ctx context.Context) (bool, error) { return restarts() > before, nil })
		},
	}.run(t)
	if n := countEvents(t, ns, "writer", "FollowDataLost"); n != 0 {
		t.Fatalf("%d FollowDataLost events", n)
	}
}
