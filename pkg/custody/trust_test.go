package custody

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func selfSigned(t *testing.T, cn string) *x509.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTrustFiles: kubectl podcopy key's PEM and the Sigstore trusted root carry the keys and
// each root in its role; a certificate without a role is refused; an empty file is refused.
func TestTrustFiles(t *testing.T) {
	t.Parallel()
	key := mustKey(t, fixedKey)
	root, tsa := selfSigned(t, "root"), selfSigned(t, "tsa")
	in := Trust{Keys: []*PublicKey{key.Public()}, Roots: []*x509.Certificate{root}, TimestampRoots: []*x509.Certificate{tsa}}
	out, err := ParseTrustPEM(TrustPEM(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Keys) != 1 || out.Keys[0].ID() != key.Public().ID() || len(out.Roots) != 1 || !out.Roots[0].Equal(root) || len(out.TimestampRoots) != 1 || !out.TimestampRoots[0].Equal(tsa) {
		t.Fatalf("round trip: %+v", out)
	}
	if _, err := ParseTrustPEM(CertificatesPEM([]*x509.Certificate{root})); err == nil || !strings.Contains(err.Error(), "without a Podcopy-Role header") {
		t.Errorf("a bare certificate: %v", err)
	}
	if _, err := ParseTrustPEM([]byte("nothing")); err == nil {
		t.Error("an empty trust file was accepted")
	}
	js, err := TrustedRoot(in, "https://podcopy.dev/signer")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ParseTrustedRoot(js)
	if err != nil || len(tr.Roots) != 1 || !tr.Roots[0].Equal(root) || len(tr.TimestampRoots) != 1 {
		t.Fatalf("trusted root: %+v, %v", tr, err)
	}
	if _, err := TrustedRoot(Trust{Keys: in.Keys}, ""); err == nil {
		t.Error("a trusted root without a signer was written")
	}
}

// TestPublishedRevocations: entries are read as YAML; one naming neither a node nor a serial
// is refused; no ConfigMap is no revocation; Revoke writes what is read back.
func TestPublishedRevocations(t *testing.T) {
	t.Parallel()
	cs := fake.NewClientset()
	rs, err := PublishedRevocations(t.Context(), cs, "podcopy", "podcopy-revocations")
	if err != nil || rs != nil {
		t.Fatalf("absent: %v %v", rs, err)
	}
	from := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	if err := Revoke(t.Context(), cs, "podcopy", "podcopy-revocations", "node-n2", Revocation{Node: "n2", From: from, Reason: "lost"}); err != nil {
		t.Fatal(err)
	}
	rs, err = PublishedRevocations(t.Context(), cs, "podcopy", "podcopy-revocations")
	if err != nil || len(rs) != 1 || rs[0].Node != "n2" || !rs[0].From.Equal(from) || rs[0].Reason != "lost" {
		t.Fatalf("read back: %+v %v", rs, err)
	}
	bad := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "r", Namespace: "podcopy"}, Data: map[string]string{"x": "reason: nothing named\n"}})
	if _, err := PublishedRevocations(t.Context(), bad, "podcopy", "r"); err == nil || !strings.Contains(err.Error(), "name a node or a certificate serial") {
		t.Errorf("an entry naming nothing: %v", err)
	}
}
