package plugin

import (
	"context"
	"encoding/json"
	"time"

	"github.com/podcopy/podcopy/pkg/request"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// The request API: what a server (the web console) calls with a user's own client, plain
// arguments and no flags, so that it asks nothing the user could not ask with the plugin.

// Ask sets a collection request on pod (in namespace) with the user's own client
// (admission checks it and records who asked) and returns the request's id. follow
// harvests every interval.
func Ask(ctx context.Context, client kubernetes.Interface, namespace, pod string, paths []string, container string, follow bool, interval string) (string, error) {
	ann, err := requestAnnotations(paths, collectFlags{container: container, follow: follow, interval: interval}, time.Now())
	if err != nil {
		return "", err
	}
	p, err := patchAnnotations(ctx, client, namespace, pod, ann)
	if err != nil {
		return "", err
	}
	req, err := parseAsked(p)
	if err != nil {
		return "", err
	}
	return req.ID(), nil
}

// Stop removes pod's request with the user's own client (a follow ships what is left and
// ends).
func Stop(ctx context.Context, client kubernetes.Interface, namespace, pod string) error {
	_, err := patchAnnotations(ctx, client, namespace, pod, request.StopPatch())
	return err
}

// patchAnnotations merges ann into pod's annotations (a nil value removes one).
func patchAnnotations(ctx context.Context, client kubernetes.Interface, namespace, pod string, ann map[string]*string) (*corev1.Pod, error) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": ann}})
	if err != nil {
		return nil, err
	}
	return client.CoreV1().Pods(namespace).Patch(ctx, pod, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "kubectl-podcopy"})
}
