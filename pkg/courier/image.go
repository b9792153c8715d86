package courier

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// AgentImage finds the helper's image once (SPEC §5 source.helperImage, by default the
// agent's own image): the configured one; else the image of the agent's own pod (POD_NAME
// and POD_NAMESPACE from the downward API); else, for an agent run outside the cluster, the
// image of an agent pod in namespace (label app.kubernetes.io/component=agent).
type AgentImage struct {
	Client     kubernetes.Interface
	Configured string
	Namespace  string

	mu    sync.Mutex
	found string
}

// Image implements Courier.Image.
func (a *AgentImage) Image(ctx context.Context) (string, error) {
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
	if len(pods.Items) == 0 {
		return "", &Error{Reason: errors.New("source.helperImage is not set and the agent's image is unknown (this agent runs outside a pod and no agent pod runs in namespace " + a.Namespace + "): set source.helperImage").Error()}
	}
	a.found = agentContainerImage(&pods.Items[0])
	return a.found, nil
}

func agentContainerImage(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == "agent" {
			return c.Image
		}
	}
	return p.Spec.Containers[0].Image
}
