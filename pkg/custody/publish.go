package custody

import (
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/yaml"
)

// entry is a key's name in the published ConfigMap.
func entry(k *PublicKey) string { return k.ID() + ".pem" }

// Publish adds pub to the ConfigMap name in namespace (creating it), keeping every key
// already there: collections signed with an earlier key must still verify.
func Publish(ctx context.Context, client kubernetes.Interface, namespace, name string, pub *PublicKey) error {
	return publishEntry(ctx, client, namespace, name, entry(pub), string(pub.PEM()), false)
}

// publishEntry sets entry to value in the ConfigMap (creating it); an entry already there
// is kept unless replace.
func publishEntry(ctx context.Context, client kubernetes.Interface, namespace, name, key, value string, replace bool) error {
	cms := client.CoreV1().ConfigMaps(namespace)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cm, err := cms.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			_, err = cms.Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
					Labels: map[string]string{"app.kubernetes.io/name": "podcopy", "app.kubernetes.io/component": "signing-keys"}},
				Data: map[string]string{key: value},
			}, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				return apierrors.NewConflict(corev1.Resource("configmaps"), name, err)
			}
			return err
		}
		if err != nil {
			return err
		}
		if old, ok := cm.Data[key]; ok && (!replace || old == value) {
			return nil
		}
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[key] = value
		_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
		return err
	})
}

// Entries of the published ConfigMap beside the keys: the signer's root certificates and the
// timestamp authority's chain, as PEM.
const (
	SignerRootsEntry    = "signer-roots.crt"
	TimestampRootsEntry = "timestamp-roots.crt"
)

// Published reads the public keys in the ConfigMap name in namespace, in the order of
// their ids.
func Published(ctx context.Context, client kubernetes.Interface, namespace, name string) ([]*PublicKey, error) {
	t, err := PublishedTrust(ctx, client, namespace, name, "")
	if err == nil && len(t.Keys) == 0 {
		err = fmt.Errorf("ConfigMap %s/%s holds no public key (only the signer's roots: kubectl podcopy key --trusted-root exports them)", namespace, name)
	}
	return t.Keys, err
}

// PublishedTrust reads what records verify with: the keys and root certificates in the
// ConfigMap name, and the revocations in the ConfigMap revocations ("": none read; absent:
// none) of namespace.
func PublishedTrust(ctx context.Context, client kubernetes.Interface, namespace, name, revocations string) (Trust, error) {
	var t Trust
	cm, err := client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return t, fmt.Errorf("reading the published custody keys (ConfigMap %s/%s): %w", namespace, name, err)
	}
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		switch {
		case k == SignerRootsEntry || k == TimestampRootsEntry:
			certs, err := ParseCertificates([]byte(cm.Data[k]))
			if err != nil {
				return t, fmt.Errorf("ConfigMap %s/%s, %s: %w", namespace, name, k, err)
			}
			if k == SignerRootsEntry {
				t.Roots = certs
			} else {
				t.TimestampRoots = certs
			}
		case strings.HasSuffix(k, ".pem"):
			ks, err := ParsePublicKeys([]byte(cm.Data[k]))
			if err != nil {
				return t, fmt.Errorf("ConfigMap %s/%s, %s: %w", namespace, name, k, err)
			}
			t.Keys = append(t.Keys, ks...)
		}
	}
	if t.Empty() {
		return t, fmt.Errorf("ConfigMap %s/%s holds no public key and no signer root", namespace, name)
	}
	if revocations != "" {
		if t.Revocations, err = PublishedRevocations(ctx, client, namespace, revocations); err != nil {
			return t, err
		}
	}
	return t, nil
}

// PublishedRevocations reads the revocations in the ConfigMap name (each entry one
// Revocation, as YAML or JSON); an absent ConfigMap holds none. Only cluster admins write it:
// podcopy's own ServiceAccounts have no right to it.
func PublishedRevocations(ctx context.Context, client kubernetes.Interface, namespace, name string) ([]Revocation, error) {
	cm, err := client.CoreV1().ConfigMaps(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the revocations (ConfigMap %s/%s): %w", namespace, name, err)
	}
	var rs []Revocation
	for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
		var r Revocation
		if err := yaml.UnmarshalStrict([]byte(cm.Data[k]), &r); err != nil {
			return nil, fmt.Errorf("revocation %s in ConfigMap %s/%s: %w", k, namespace, name, err)
		}
		if (r.Node == "") == (r.Serial == "") {
			return nil, fmt.Errorf("revocation %s in ConfigMap %s/%s: name a node or a certificate serial (one of them)", k, namespace, name)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// Revoke sets entry of the revocations ConfigMap name in namespace to r (creating it), with
// the caller's credentials.
func Revoke(ctx context.Context, client kubernetes.Interface, namespace, name, entry string, r Revocation) error {
	data, err := yaml.Marshal(r)
	if err != nil {
		return err
	}
	return publishEntry(ctx, client, namespace, name, entry, string(data), true)
}

// PublishCertificates sets entry (SignerRootsEntry, TimestampRootsEntry) of the ConfigMap
// name in namespace to certs, creating it.
func PublishCertificates(ctx context.Context, client kubernetes.Interface, namespace, name, entry string, certs []*x509.Certificate) error {
	return publishEntry(ctx, client, namespace, name, entry, string(CertificatesPEM(certs)), true)
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
