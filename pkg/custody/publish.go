package custody

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// entry is a key's name in the published ConfigMap.
func entry(k *PublicKey) string { return k.ID() + ".pem" }

// Publish adds pub to the ConfigMap name in namespace (creating it), keeping every key
// already there: collections signed with an earlier key must still verify.
func Publish(ctx context.Context, client kubernetes.Interface, namespace, name string, pub *PublicKey) error {
	cms := client.CoreV1().ConfigMaps(namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
					Labels: map[string]string{"app.kubernetes.io/name": "podcopy", "app.kubernetes.io/component": "signing-keys"}},
				Data: map[string]string{entry(pub): string(pub.PEM())},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if _, ok := cm.Data[entry(pub)]; ok {
			return nil
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[entry(pub)] = string(pub.PEM())
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// Published reads the public keys in the ConfigMap name in namespace, in the order of
// their ids.
func Published(ctx context.Context, client kubernetes.Interface, namespace, name string) ([]*PublicKey, error) {
	cm, err := client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the published custody keys (ConfigMap %s/%s): %w", namespace, name, err)
	}
	var keys []*PublicKey
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		if !strings.HasSuffix(k, ".pem") {
			continue
		}
		ks, err := ParsePublicKeys([]byte(cm.Data[k]))
		if err != nil {
			return nil, fmt.Errorf("ConfigMap %s/%s, %s: %w", namespace, name, k, err)
		}
		keys = append(keys, ks...)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("ConfigMap %s/%s holds no public key", namespace, name)
	}
	return keys, nil
}

// SecretKey is the key the signing key is stored under in its Secret.
const SecretKey = "key.pem"

// FromSecret reads the signing key from the Secret name in namespace, creating the Secret
// with a new ed25519 key when it does not exist (the first agent to start makes it; the
// others, losing the race, read it). created says this call made it.
func FromSecret(ctx context.Context, client kubernetes.Interface, namespace, name string) (key *PrivateKey, created bool, err error) {
	secrets := client.CoreV1().Secrets(namespace)
	for range 3 {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			data, ok := s.Data[SecretKey]
			if !ok {
				return nil, false, fmt.Errorf("the Secret %s/%s has no %s", namespace, name, SecretKey)
			}
			key, err := ParsePrivateKey(data)
			if err != nil {
				return nil, false, fmt.Errorf("the Secret %s/%s: %w", namespace, name, err)
			}
			return key, false, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, false, err
		}
		key, pemData, err := GenerateKey()
		if err != nil {
			return nil, false, err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
				Labels: map[string]string{"app.kubernetes.io/name": "podcopy", "app.kubernetes.io/component": "signing-key"}},
			Type: corev1.SecretTypeOpaque,
			Data: map[string][]byte{SecretKey: pemData},
		}, metav1.CreateOptions{})
		if err == nil {
			return key, true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, false, err
		}
	}
	return nil, false, fmt.Errorf("the Secret %s/%s was created and deleted while reading it", namespace, name)
}
