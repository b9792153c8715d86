package courier

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
// POD_NAMESPACE from the downward API); else, for an agent run outside the cluster, the image
// of an agent pod in namespace (label app.kubernetes.io/component=agent); else an image named
// podcopy-agent that the target pod's node already holds (its status lists them).
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
	img, why := a.onNode(ctx, node)
	if img != "" {
		return img, nil // not remembered: another node may hold another one
	}
	return "", &Error{Reason: "source.helperImage is not set and the agent's own image is unknown: this agent runs outside a pod, no agent pod runs in namespace " +
		a.Namespace + ", and " + why + "; set source.helperImage in the agent's configuration"}
}

// onNode is an image named podcopy-agent that node holds, or why there is none.
func (a *AgentImage) onNode(ctx context.Context, node string) (string, string) {
	if node == "" {
		return "", "the pod has no node"
	}
	n, err := a.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Sprintf("node %s's images cannot be read (%v)", node, err)
	}
	for _, img := range n.Status.Images {
		for _, name := range img.Names {
			if strings.Contains(name, "/podcopy-agent:") && !strings.Contains(name, "@") {
				return name, ""
			}
		}
	}
	return "", fmt.Sprintf("node %s holds no podcopy-agent image", node)
}

func agentContainerImage(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == "agent" {
			return c.Image
		}
	}
	return p.Spec.Containers[0].Image
}
