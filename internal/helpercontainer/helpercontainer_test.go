package helpercontainer

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const image = "podcopy/podcopy-agent:test"

func imageFn(context.Context, string) (string, error) { return image, nil }

func pod(mutate func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "uid-1"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "distroless"}}},
	}
	if mutate != nil {
		mutate(p)
	}
	return p
}

func TestSpecRunsAsTheTargetsUser(t *testing.T) {
	t.Parallel()
	uid := int64(65532)
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		wantUser   int64
		restricted bool
	}{
		{"root or unknown user: root, to become the target's user", pod(nil), 0, false},
		{"container runAsUser", pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: &uid}
		}), uid, true},
		{"pod runAsUser", pod(func(p *corev1.Pod) { p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &uid} }), uid, true},
		{"pod runAsNonRoot without a user: the image's user", pod(func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: new(true)}
		}), -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ec, err := Spec(tc.pod, "app", image)
			if err != nil {
				t.Fatal(err)
			}
			sc := ec.SecurityContext
			if ec.TargetContainerName != "app" || ec.Name != Name || ec.Image != image || !*sc.ReadOnlyRootFilesystem {
				t.Fatalf("spec %+v", ec)
			}
			switch {
			case tc.wantUser < 0 && sc.RunAsUser != nil, tc.wantUser >= 0 && (sc.RunAsUser == nil || *sc.RunAsUser != tc.wantUser):
				t.Fatalf("runAsUser %v, want %d", sc.RunAsUser, tc.wantUser)
			}
			restricted := sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation &&
				sc.Capabilities != nil && len(sc.Capabilities.Drop) == 1 && sc.Capabilities.Drop[0] == "ALL" &&
				sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
			if restricted != tc.restricted {
				t.Fatalf("restricted-compliant = %v, want %v: %+v", restricted, tc.restricted, sc)
			}
		})
	}
	if _, err := Spec(pod(nil), "sidecar", image); err == nil {
		t.Fatal("aimed at a container that is not there")
	}
	// Issue 20: a root target's helper has no more capabilities than the target.
	dropped := pod(func(p *corev1.Pod) {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"CHOWN"}}}
	})
	ec, err := Spec(dropped, "app", image)
	if err != nil {
		t.Fatal(err)
	}
	if c := ec.SecurityContext.Capabilities; c == nil || len(c.Drop) != 1 || c.Drop[0] != "ALL" || len(c.Add) != 1 || c.Add[0] != "CHOWN" ||
		*ec.SecurityContext.AllowPrivilegeEscalation || ec.SecurityContext.SeccompProfile == nil {
		t.Fatalf("root target with dropped capabilities: helper %+v", ec.SecurityContext)
	}
	if _, err := Spec(pod(func(p *corev1.Pod) {
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: new(true)}
	}), "app", image); err == nil {
		t.Fatal("a helper for a privileged target")
	}
}

func TestEnsure(t *testing.T) {
	t.Parallel()
	running := corev1.ContainerStatus{Name: Name, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
	stopped := corev1.ContainerStatus{Name: Name, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137}}}
	helperOf := func(target string) corev1.EphemeralContainer {
		ec, _ := Spec(pod(nil), target, image)
		return ec
	}
	for _, tc := range []struct {
		name       string
		pod        *corev1.Pod
		patchErr   error
		wantTarget string // container exec'd into; "" = an error
		wantErr    string
		wantPatch  bool
		container  string // "" = app
	}{
		{name: "the podcopy sidecar is read directly", pod: pod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{{Name: "podcopy", Args: []string{SidecarArg}}}
		}), container: "podcopy", wantTarget: "podcopy"},
		{name: "a running helper is reused", pod: pod(func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{helperOf("app")}
			p.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{running}
		}), wantTarget: Name},
		{name: "a stopped helper is not reused", pod: pod(func(p *corev1.Pod) {
			p.Spec.EphemeralContainers = []corev1.EphemeralContainer{helperOf("app")}
			p.Status.EphemeralContainerStatuses = []corev1.ContainerStatus{stopped}
		}), wantPatch: true, wantErr: "did not start"},
		{name: "refused by Pod Security: its reason, at once", pod: pod(nil),
			patchErr:  apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "p", errors.New(`violates PodSecurity "restricted:latest": runAsNonRoot != true`)),
			wantPatch: true, wantErr: `refused: Forbidden: pods "p" is forbidden: violates PodSecurity "restricted:latest"`},
		{name: "shared process namespace", pod: pod(func(p *corev1.Pod) { p.Spec.ShareProcessNamespace = new(true) }), wantErr: "shareProcessNamespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cs := fake.NewClientset(tc.pod)
			patched := false
			cs.PrependReactor("patch", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() != "ephemeralcontainers" {
					return false, nil, nil
				}
				patched = true
				if tc.patchErr != nil {
					return true, nil, tc.patchErr
				}
				return true, tc.pod, nil // accepted; the container never starts (the kubelet is not here)
			})
			c := &Courier{Client: cs, Image: imageFn, Wait: 200 * time.Millisecond, Poll: 10 * time.Millisecond}
			container := tc.container
			if container == "" {
				container = "app"
			}
			h, err := c.Ensure(t.Context(), tc.pod, container)
			if patched != tc.wantPatch {
				t.Fatalf("patched = %v, want %v", patched, tc.wantPatch)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || h.Target.Container != tc.wantTarget {
				t.Fatalf("helper %+v, err %v", h, err)
			}
		})
	}
}

func TestAgentImage(t *testing.T) {
	t.Parallel()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{Images: []corev1.ContainerImage{
		{Names: []string{"registry.local/other:1"}},
		{Names: []string{"podcopy.local/podcopy-agent@sha256:abc", "podcopy.local/podcopy-agent:dev"}},
	}}}
	agent := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "podcopy", Name: "agent-x", Labels: map[string]string{"app.kubernetes.io/component": "agent"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "podcopy/podcopy-agent:0.1.0"}}}}
	pinnedAgent := agent.DeepCopy()
	pinnedAgent.Name = "agent-pinned"
	pinnedAgent.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "agent", ImageID: "docker.io/podcopy/podcopy-agent@sha256:" + strings.Repeat("ab", 32)}}
	for _, tc := range []struct {
		name       string
		configured string
		objects    []runtime.Object
		want       string
	}{
		{"configured", "mirror.local/podcopy:1", nil, "mirror.local/podcopy:1"},
		{"an agent pod's image", "", []runtime.Object{agent, node}, "podcopy/podcopy-agent:0.1.0"},
		// Issue 20: a tenant can place an image of any name on a node; it is never chosen.
		{"never an image found on the node", "", []runtime.Object{node}, ""},
		{"the agent pod's image, pinned to the digest it ran", "", []runtime.Object{pinnedAgent, node}, "podcopy/podcopy-agent@sha256:" + strings.Repeat("ab", 32)},
		{"unknown: a clear reason", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := &AgentImage{Client: fake.NewClientset(tc.objects...), Configured: tc.configured, Namespace: "podcopy"}
			got, err := a.Image(t.Context(), "n1")
			if tc.want == "" {
				var cerr *Error
				if !errors.As(err, &cerr) || !strings.Contains(err.Error(), "set source.helperImage") {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("image %q, err %v; want %q", got, err, tc.want)
			}
		})
	}
}
