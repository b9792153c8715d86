package shell

import (
	"context"
	"fmt"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podcopy/podcopy/pkg/exec"
)

// User is an authenticated Kubernetes user.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string]authnv1.ExtraValue
}

// Authenticator turns a bearer token into a user.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (User, error)
}

// Authorizer decides whether a user may exec into a pod; reason explains a refusal.
type Authorizer interface {
	CanExec(ctx context.Context, u User, namespace, pod string) (allowed bool, reason string, err error)
}

// ExecutorFactory returns an Executor that acts with the user's own token, so the API
// server's RBAC and audit log see the real user.
type ExecutorFactory func(token string) (exec.Executor, error)

// TokenReviewAuthenticator authenticates with the TokenReview API.
type TokenReviewAuthenticator struct{ Client kubernetes.Interface }

// Authenticate implements Authenticator.
func (a TokenReviewAuthenticator) Authenticate(ctx context.Context, token string) (User, error) {
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return User{}, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		msg := tr.Status.Error
		if msg == "" {
			msg = "the token was not accepted"
		}
		return User{}, &RefusedError{Code: CloseUnauthenticated, Reason: "authentication failed: " + msg}
	}
	u := tr.Status.User
	return User{Name: u.Username, UID: u.UID, Groups: u.Groups, Extra: u.Extra}, nil
}

// SubjectAccessReviewAuthorizer authorizes with the SubjectAccessReview API.
type SubjectAccessReviewAuthorizer struct{ Client kubernetes.Interface }

// CanExec implements Authorizer.
func (a SubjectAccessReviewAuthorizer) CanExec(ctx context.Context, u User, namespace, pod string) (bool, string, error) {
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Namespace: namespace, Verb: "create", Resource: "pods", Subresource: "exec", Name: pod},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subject access review: %w", err)
	}
	return sar.Status.Allowed, sar.Status.Reason, nil
}

// UserExecutors builds executors from the agent's connection settings (server, CA) and the
// user's token, without any of the agent's own credentials.
func UserExecutors(base *rest.Config, transport exec.Transport) ExecutorFactory {
	clients := UserClients(base, transport)
	return func(token string) (exec.Executor, error) {
		_, ex, err := clients(token)
		return ex, err
	}
}

// UserClients builds an API client and an executor that act with the user's token alone
// (the agent's server address and CA, none of its credentials).
func UserClients(base *rest.Config, transport exec.Transport) func(token string) (kubernetes.Interface, exec.Executor, error) {
	return func(token string) (kubernetes.Interface, exec.Executor, error) {
		cfg := rest.AnonymousClientConfig(base)
		cfg.BearerToken = token
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, nil, err
		}
		return cs, exec.NewRemote(cfg, cs.CoreV1().RESTClient(), transport), nil
	}
}
