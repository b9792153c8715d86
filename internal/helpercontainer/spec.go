package helpercontainer

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/podcopy/podcopy/pkg/source"
)

// Spec is the helper ephemeral container aimed at container of pod.
//
// Which user it runs as decides whether the kernel lets it open /proc/1/root: only a
// process of the target's own user, holding no capability the target lacks, may (without
// CAP_SYS_PTRACE, which Pod Security "baseline" forbids). So:
//   - the target's user is known (runAsUser on the container or the pod) and is not root,
//     or the target must not run as root (runAsNonRoot): the helper runs as that user with
//     every capability dropped, no privilege escalation and the runtime's default seccomp
//     profile, which Pod Security "restricted" allows;
//   - otherwise the helper starts as root with exactly the target's capabilities (the
//     runtime's default with the target's own drops and adds: never more than the target,
//     which the kernel's ptrace rule needs at least), no privilege escalation and the
//     runtime's default seccomp profile; it reads the target's user from /proc/1/status and
//     becomes that user before it opens anything (package rootfs), which clears every
//     capability when that user is not root.
//
// Its root filesystem is read-only, it mounts no volume and no token, and it writes nothing.
func Spec(pod *corev1.Pod, container, image string) (corev1.EphemeralContainer, error) {
	var ct *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == container {
			ct = &pod.Spec.Containers[i]
		}
	}
	if ct == nil {
		return corev1.EphemeralContainer{}, &Error{Reason: fmt.Sprintf("container %s is not one of the pod's containers (an ephemeral helper can aim only at those)", container)}
	}
	uid, gid, nonRoot := effectiveUser(pod.Spec.SecurityContext, ct.SecurityContext)
	sc := &corev1.SecurityContext{ReadOnlyRootFilesystem: ptr(true)}
	switch {
	case (uid != nil && *uid != 0) || (nonRoot != nil && *nonRoot):
		sc.RunAsUser, sc.RunAsGroup, sc.RunAsNonRoot = uid, gid, ptr(true)
		sc.AllowPrivilegeEscalation = ptr(false)
		sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	default:
		sc.RunAsUser, sc.RunAsGroup, sc.RunAsNonRoot = ptr(int64(0)), ptr(int64(0)), ptr(false)
		sc.AllowPrivilegeEscalation = ptr(false)
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
		if ct.SecurityContext != nil && ct.SecurityContext.Capabilities != nil {
			sc.Capabilities = ct.SecurityContext.Capabilities.DeepCopy()
		}
		if ct.SecurityContext != nil && ct.SecurityContext.Privileged != nil && *ct.SecurityContext.Privileged {
			return corev1.EphemeralContainer{}, &Error{Reason: fmt.Sprintf("container %s is privileged: the helper does not run privileged; read it with podcopy/source=tar", container)}
		}
	}
	return corev1.EphemeralContainer{
		TargetContainerName: container,
		EphemeralContainerCommon: corev1.EphemeralContainerCommon{
			Name:                     freeName(pod),
			Image:                    image,
			ImagePullPolicy:          corev1.PullIfNotPresent,
			Command:                  source.WaitCommand(),
			SecurityContext:          sc,
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		},
	}, nil
}

// effectiveUser is the user, group and runAsNonRoot a container runs with: its own
// security context's, else the pod's.
func effectiveUser(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) (uid, gid *int64, nonRoot *bool) {
	if pod != nil {
		uid, gid, nonRoot = pod.RunAsUser, pod.RunAsGroup, pod.RunAsNonRoot
	}
	if c != nil {
		if c.RunAsUser != nil {
			uid = c.RunAsUser
		}
		if c.RunAsGroup != nil {
			gid = c.RunAsGroup
		}
		if c.RunAsNonRoot != nil {
			nonRoot = c.RunAsNonRoot
		}
	}
	return uid, gid, nonRoot
}

func ptr[T any](v T) *T { return &v }
