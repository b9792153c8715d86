// Package helpercontainer adds the podcopy helper to a pod as an ephemeral container aimed at the
// container to read (SPEC §1 podcopy/source=helper), so files can be collected and followed
// from containers with no shell and no tar. The helper container runs the podcopy binary
// idle ("podcopy-agent source wait"); the agent execs "podcopy-agent source --pid=1 ..." in
// it, which reads the target's files through /proc/1/root (the target's main process, in
// the process namespace the ephemeral container shares with it). Ephemeral containers
// cannot be removed, so one that is already there and running is reused.
package helpercontainer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/source"
)

// Name is the ephemeral container's name (with -2, -3, ... when an earlier one aimed at
// another container, or stopped, holds it).
const Name = "podcopy"

// SidecarArg marks a container as the podcopy sidecar: the helper is then run in it
// directly, reading its own filesystem (the volume it shares with the application).
const SidecarArg = "--mode=sidecar"

// Helper is a running helper: where to exec it and its argv prefix.
type Helper struct {
	Target  exec.Target
	Command []string
	// Ephemeral: the helper is the ephemeral container this agent added, running the
	// configured or the agent's own image, so it speaks this version's flags (a podcopy
	// sidecar may be older).
	Ephemeral bool
}

// Courier starts helpers.
type Courier struct {
	Client kubernetes.Interface
	// Image is the helper's image: source.helperImage, by default the agent's own image.
	Image func(ctx context.Context, node string) (string, error)
	// Wait bounds how long a new helper may take to run (2 minutes when zero): an image that
	// cannot be pulled or a container the runtime refuses fails within it, with its reason.
	Wait time.Duration
	// Poll is the interval of the status checks while waiting (500 ms when zero).
	Poll time.Duration
}

// Error is a helper that cannot be started, with the reason to show the user. Running the
// request again does not help until something changes in the cluster.
type Error struct{ Reason string }

func (e *Error) Error() string { return e.Reason }

// Ensure returns a running helper that reads container of pod: the container itself when
// it is the podcopy sidecar, else the pod's podcopy ephemeral container aimed at it, added
// if it is not there yet.
func (c *Courier) Ensure(ctx context.Context, pod *corev1.Pod, container string) (Helper, error) {
	// The whole pod, read now: informers keep a trimmed copy (no security contexts, no args).
	fresh, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return Helper{}, fmt.Errorf("reading pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	if fresh.UID != pod.UID {
		return Helper{}, &Error{Reason: "the pod was replaced"}
	}
	for _, ct := range append(slices.Clone(fresh.Spec.InitContainers), fresh.Spec.Containers...) {
		if ct.Name == container && isSidecar(ct) {
			return Helper{Target: target(fresh, container), Command: source.HelperCommand(0)}, nil
		}
	}
	if fresh.Spec.ShareProcessNamespace != nil && *fresh.Spec.ShareProcessNamespace {
		return Helper{}, &Error{Reason: "podcopy/source=helper cannot tell the target container's processes apart in a pod with shareProcessNamespace: true; add the podcopy sidecar (README: Sidecar mode) or read with tar"}
	}
	image, err := c.Image(ctx, fresh.Spec.NodeName)
	if err != nil {
		return Helper{}, err
	}
	name, err := c.add(ctx, fresh, container, image)
	if err != nil {
		return Helper{}, err
	}
	if err := c.waitRunning(ctx, fresh, name); err != nil {
		return Helper{}, err
	}
	return Helper{Target: target(fresh, name), Command: source.HelperCommand(1), Ephemeral: true}, nil
}

func target(pod *corev1.Pod, container string) exec.Target {
	return exec.Target{Namespace: pod.Namespace, Pod: pod.Name, Container: container}
}

func isSidecar(c corev1.Container) bool {
	return slices.Contains(c.Args, SidecarArg) || slices.Contains(c.Command, SidecarArg)
}

// add finds a usable helper aimed at container or adds one, and returns its name.
func (c *Courier) add(ctx context.Context, pod *corev1.Pod, container, image string) (string, error) {
	fresh := pod
	for i := range 5 { // conflicts: someone else changed the pod in between
		if i > 0 {
			var err error
			if fresh, err = c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
				return "", fmt.Errorf("reading pod %s/%s: %w", pod.Namespace, pod.Name, err)
			}
			if fresh.UID != pod.UID {
				return "", &Error{Reason: "the pod was replaced"}
			}
		}
		if name := reusable(fresh, container, image); name != "" {
			return name, nil
		}
		spec, err := Spec(fresh, container, image)
		if err != nil {
			return "", err
		}
		// A strategic merge patch of the subresource (RBAC: patch pods/ephemeralcontainers, as
		// kubectl debug), with the resourceVersion read so that a concurrent change conflicts.
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": fresh.ResourceVersion},
			"spec":     map[string]any{"ephemeralContainers": []corev1.EphemeralContainer{spec}},
		})
		if err != nil {
			return "", err
		}
		_, err = c.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch,
			metav1.PatchOptions{FieldManager: "podcopy"}, "ephemeralcontainers")
		switch {
		case err == nil:
			return spec.Name, nil
		case apierrors.IsConflict(err):
			continue
		case apierrors.IsForbidden(err), apierrors.IsInvalid(err):
			return "", &Error{Reason: fmt.Sprintf("adding the podcopy helper (an ephemeral container aimed at %s) was refused: %v", container, apierrors.ReasonForError(err)) + ": " + err.Error()}
		}
		return "", fmt.Errorf("adding the podcopy helper ephemeral container: %w", err)
	}
	return "", errors.New("adding the podcopy helper ephemeral container: the pod kept changing (conflicts)")
}

// reusable is the name of a helper already in pod, aimed at container, from image, and not
// stopped ("" if none).
func reusable(pod *corev1.Pod, container, image string) string {
	for _, ec := range pod.Spec.EphemeralContainers {
		if ec.TargetContainerName != container || ec.Image != image || !isHelper(ec) {
			continue
		}
		if st := ephemeralStatus(pod, ec.Name); st == nil || st.State.Terminated == nil {
			return ec.Name
		}
	}
	return ""
}

func isHelper(ec corev1.EphemeralContainer) bool {
	return slices.Equal(ec.Command, source.WaitCommand())
}

func ephemeralStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	for i := range pod.Status.EphemeralContainerStatuses {
		if pod.Status.EphemeralContainerStatuses[i].Name == name {
			return &pod.Status.EphemeralContainerStatuses[i]
		}
	}
	return nil
}

// freeName is "podcopy", or "podcopy-N" for the first N not taken by any container.
func freeName(pod *corev1.Pod) string {
	taken := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		taken[c.Name] = true
	}
	for _, c := range pod.Spec.InitContainers {
		taken[c.Name] = true
	}
	for _, c := range pod.Spec.EphemeralContainers {
		taken[c.Name] = true
	}
	name := Name
	for n := 2; taken[name]; n++ {
		name = Name + "-" + strconv.Itoa(n)
	}
	return name
}

// waitRunning waits until the ephemeral container name runs, or fails with the runtime's
// reason (an image that cannot be pulled, a container that cannot be created).
func (c *Courier) waitRunning(ctx context.Context, pod *corev1.Pod, name string) error {
	wait, poll := c.Wait, c.Poll
	if wait <= 0 {
		wait = 2 * time.Minute
	}
	if poll <= 0 {
		poll = 500 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	last := "it has no status yet"
	for {
		p, err := c.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err == nil {
			st := ephemeralStatus(p, name)
			switch {
			case st == nil:
			case st.State.Running != nil:
				return nil
			case st.State.Terminated != nil:
				return &Error{Reason: fmt.Sprintf("the podcopy helper container %s stopped: %s (exit %d) %s", name, st.State.Terminated.Reason, st.State.Terminated.ExitCode, st.State.Terminated.Message)}
			case st.State.Waiting != nil:
				last = fmt.Sprintf("waiting: %s %s", st.State.Waiting.Reason, st.State.Waiting.Message)
				if fatalWaiting(st.State.Waiting.Reason) {
					return &Error{Reason: fmt.Sprintf("the podcopy helper container %s cannot start: %s", name, last)}
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the podcopy helper container %s did not start within %s (%s): %w", name, wait, last, context.Cause(ctx))
		case <-time.After(poll):
		}
	}
}

func fatalWaiting(reason string) bool {
	switch reason {
	case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
		"CreateContainerConfigError", "CreateContainerError", "RunContainerError":
		return true
	}
	return false
}
