package collect

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/podcopy/podcopy/internal/helpercontainer"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/source"
)

// helperStartTimeout bounds finding or starting the helper container.
const helperStartTimeout = 3 * time.Minute

// ReasonHelperFallback is the Event of a request read through the podcopy helper because
// the container lacks tar or sh (podcopy/source=auto).
const ReasonHelperFallback = "ReadingThroughHelper"

// Helpers starts the podcopy helper that reads a container (package helpercontainer).
type Helpers interface {
	Ensure(ctx context.Context, pod *corev1.Pod, container string) (helpercontainer.Helper, error)
}

// sourceMode is how req's files are read: its podcopy/source, else the agent's source.mode.
func (s Settings) sourceMode(req request.Request) request.Source {
	switch {
	case req.Source != "":
		return req.Source
	case s.Source != "":
		return s.Source
	}
	return request.SourceAuto
}

// helper starts (or finds) the helper reading container. A helper that cannot be started
// for a reason the cluster states (refused by admission or Pod Security, an image that
// cannot be pulled) is a permanent failure with that reason.
func (h work) helper(ctx context.Context, pod *corev1.Pod, container string) (helpercontainer.Helper, error) {
	if h.Helpers == nil {
		return helpercontainer.Helper{}, &ship.PermanentError{Err: errors.New("the podcopy helper is not available in this agent")}
	}
	// A deadline over the API calls and the wait for the container (which has its own, 2
	// minutes): a stalled API connection fails this attempt instead of holding it.
	ctx, cancel := context.WithTimeout(ctx, helperStartTimeout)
	defer cancel()
	hp, err := h.Helpers.Ensure(ctx, pod, container)
	var cerr *helpercontainer.Error
	if errors.As(err, &cerr) {
		return hp, &ship.PermanentError{Err: err}
	}
	return hp, err
}

// missingTools reports the command the container lacks, if err says so.
func missingTools(err error) (string, bool) {
	var missing *exec.MissingCommandError
	if errors.As(err, &missing) {
		return missing.Command, true
	}
	return "", false
}

// helperSource is follow's source through the helper.
func (h work) helperSource(ctx context.Context, pod *corev1.Pod, container string) (source.Remote, error) {
	target, r, err := h.helperReader(ctx, pod, container, nil)
	if err != nil {
		return source.Remote{}, err
	}
	return source.Remote{Exec: h.Exec, Target: target, Reader: r}, nil
}

// helperReader starts (or finds) the helper reading container's files and says where it
// runs and how to read through it. An ephemeral helper is given deny (policy.denyPaths) and
// never opens a denied file; the sidecar shares only the volume it was given.
func (h work) helperReader(ctx context.Context, pod *corev1.Pod, container string, deny []string) (exec.Target, source.Reader, error) {
	hp, err := h.helper(ctx, pod, container)
	if err != nil {
		return exec.Target{}, nil, err
	}
	r := source.Helper{Command: hp.Command}
	if hp.Ephemeral {
		r.Deny = deny
	}
	return hp.Target, r, nil
}
