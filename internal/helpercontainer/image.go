package helpercontainer

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// AgentImage finds the helper's image (SPEC §5 source.helperImage, by default the agent's
// own image): the configured one; else the image of the agent's own pod (POD_NAME and
// POD_NAMESPACE from the downward API), pinned to the digest the kubelet ran when it reports
// one; else, for an agent run outside the cluster, the image of an agent pod in namespace
// (label app.kubernetes.io/component=agent), pinned the same way. Never an image found by
// name on a node: a tenant can put an image of any name there (issue 20).
type AgentImage struct {
	Client     kubernetes.Interface
	Configured string
	Namespace  string

	mu    sync.Mutex
	found string
}

// Image implements Courier.Image for a pod on node.
func (a *AgentImage) Image(ctx context.Context, node string) (string, error) {
	if a.Configured != "" {
		return a.Configured, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.found != "" {
		return a.found, nil
	}
	if name, ns := os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE"); name != "" && ns != "" {
		p, err := a.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("finding the agent's own image for the helper (pod %s/%s): %w", ns, name, err)
		}
		a.found = agentContainerImage(p)
		return a.found, nil
	}
	pods, err := a.Client.CoreV1().Pods(a.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=agent", Limit: 1})
	if err != nil {
		return "", fmt.Errorf("finding the agent image for the helper in namespace %s: %w", a.Namespace, err)
	}
	if len(pods.Items) > 0 {
		a.found = agentContainerImage(&pods.Items[0])
		return a.found, nil
	}
	return "", &Error{Reason: "source.helperImage is not set and the agent's own image is unknown: this agent runs outside a pod and no agent pod runs in namespace " +
		a.Namespace + "; set source.helperImage in the agent's configuration"}
}

// agentContainerImage is the agent container's image, as <repository>@sha256:<digest> when
// the kubelet reports the digest it ran under that repository (so the helper runs the same
// bytes even if the tag moves), else as written in the spec.
func agentContainerImage(p *corev1.Pod) string {
	name, image := p.Spec.Containers[0].Name, p.Spec.Containers[0].Image
	for _, c := range p.Spec.Containers {
		if c.Name == "agent" {
			name, image = c.Name, c.Image
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == name {
			return pinned(image, cs.ImageID)
		}
	}
	return image
}

// pinned is image by the digest in imageID ("<repository>@sha256:<hex>", what the kubelet
// reports for a pulled image) when that repository is image's; image itself otherwise (a
// locally imported image reports only its config's digest).
func pinned(image, imageID string) string {
	repo, digest, ok := strings.Cut(strings.TrimPrefix(imageID, "docker-pullable://"), "@sha256:")
	if !ok || len(digest) != 64 || strings.Trim(digest, "0123456789abcdef") != "" {
		return image
	}
	ref := image
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	if ref != repo && "docker.io/"+ref != repo && "docker.io/library/"+ref != repo {
		return image
	}
	return ref + "@sha256:" + digest
}
