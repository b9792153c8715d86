package custody

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// The first agent creates the signing key's Secret; the next reads the same key; a Secret
// without a key is an error, never silently replaced.
func TestFromSecret(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	first, created, err := FromSecret(t.Context(), cs, "podcopy", "podcopy-signing-key")
	if err != nil || !created {
		t.Fatalf("first: created %v, %v", created, err)
	}
	second, created, err := FromSecret(t.Context(), cs, "podcopy", "podcopy-signing-key")
	if err != nil || created || second.Public().ID() != first.Public().ID() {
		t.Fatalf("second: created %v, %v, same key %v", created, err, err == nil && second.Public().ID() == first.Public().ID())
	}
	_, err = cs.CoreV1().Secrets("podcopy").Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "empty", Namespace: "podcopy"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := FromSecret(t.Context(), cs, "podcopy", "empty"); err == nil {
		t.Fatal("a Secret without key.pem was accepted")
	}
}

// Publishing adds keys and never removes one; Published reads them all back.
func TestPublish(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	a, _, _ := GenerateKey()
	b, _, _ := GenerateKey()
	for _, k := range []*PrivateKey{a, b, a} {
		if err := Publish(t.Context(), cs, "podcopy", "keys", k.Public()); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := Published(t.Context(), cs, "podcopy", "keys")
	if err != nil || len(keys) != 2 {
		t.Fatalf("published %d keys: %v", len(keys), err)
	}
}
