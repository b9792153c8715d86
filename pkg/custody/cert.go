package custody

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/digitorus/pkcs7"
	"github.com/digitorus/timestamp"
)

// A record signed by a key with a certificate is a Sigstore bundle (v0.3): the DSSE envelope,
// the signing certificate, and an RFC 3161 timestamp over the signature. Anyone with the
// cluster's trusted root (kubectl podcopy key --trusted-root) verifies it offline, with
// podcopy or with the Sigstore tools (cosign verify-blob-attestation --bundle, sigstore-go).
const (
	// BundleMediaType is the media type of a custody record written as a Sigstore bundle.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// NodeURIPrefix starts the URI SAN of an agent certificate; the node's name follows.
	NodeURIPrefix = "https://podcopy.dev/nodes/"
)

// OIDIssuer is Fulcio's OIDC issuer extension (1.3.6.1.4.1.57264.1.8, a DER UTF8String),
// which cosign's --certificate-oidc-issuer matches; podcopy's signer writes its own issuer
// name there.
var OIDIssuer = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}

// NodeURI is the URI SAN naming node in an agent's certificate.
func NodeURI(node string) string { return NodeURIPrefix + node }

// CertNode is the node an agent certificate names (its one URI SAN under NodeURIPrefix).
func CertNode(cert *x509.Certificate) (string, error) {
	var node string
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, NodeURIPrefix) {
			if node != "" {
				return "", errors.New("the certificate names more than one node")
			}
			node = strings.TrimPrefix(s, NodeURIPrefix)
		}
	}
	if node == "" || strings.ContainsAny(node, "/?#") {
		return "", fmt.Errorf("the certificate (serial %x) names no node (no URI SAN %s<node>)", cert.SerialNumber, NodeURIPrefix)
	}
	return node, nil
}

// Certifier gives a key its certificate and timestamps its signatures: the agent's client
// of the cluster's signer.
type Certifier interface {
	// Certificate is the key's certificate, valid now (DER).
	Certificate(ctx context.Context) ([]byte, error)
	// Timestamp is an RFC 3161 time-stamp response (DER) over SHA-256(signature).
	Timestamp(ctx context.Context, signature []byte) ([]byte, error)
	// Roots are the signer's root certificates and the timestamp authority's, as the signer
	// gave them: what the agent's own records verify with.
	Roots() (signer, timestamps []*x509.Certificate)
}

// GenerateEphemeralKey makes an ECDSA P-256 key in memory (never written anywhere): the key
// an agent gets a short-lived certificate for.
func GenerateEphemeralKey() (*PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return newPrivateKey(k)
}

// Certified is k with certificates and timestamps from c: records it seals are Sigstore
// bundles.
func (k *PrivateKey) Certified(c Certifier) *PrivateKey {
	return &PrivateKey{key: k.key, pub: k.pub, certifier: c}
}

// Signer is k's crypto.Signer (to prove possession to a signer).
func (k *PrivateKey) Signer() crypto.Signer { return k.key }

// Trust is what k's own records verify with: its public key, or its signer's roots.
func (k *PrivateKey) Trust() Trust {
	if k.certifier == nil {
		return Trust{Keys: []*PublicKey{k.pub}}
	}
	r, ts := k.certifier.Roots()
	return Trust{Roots: r, TimestampRoots: ts}
}

// Ready gets k's certificate now (nil, nil for a key without a certifier).
func (k *PrivateKey) Ready(ctx context.Context) ([]byte, error) {
	if k.certifier == nil {
		return nil, nil
	}
	return k.certifier.Certificate(ctx)
}

// HasCertificate is true when k's records carry a certificate.
func (k *PrivateKey) HasCertificate() bool { return k.certifier != nil }

// Revocation withdraws trust in records signed by a node's certificates (Node) or by one
// certificate (Serial, hex), signed at or after From (zero: all of them).
type Revocation struct {
	Node   string    `json:"node,omitempty"`
	Serial string    `json:"serial,omitempty"`
	From   time.Time `json:"from,omitzero"`
	Reason string    `json:"reason,omitempty"`
}

// Trust is what custody records verify with: the published keys (records signed by a key
// without a certificate), the signer's root certificates and the timestamp authority's (records
// with one), and the revocations.
type Trust struct {
	Keys []*PublicKey
	// Roots are the signer's CA certificates; TimestampRoots the timestamp authority's.
	Roots, TimestampRoots []*x509.Certificate
	Revocations           []Revocation
}

// Merge is t with o's keys and roots added; o's revocations replace t's when it has any.
func (t Trust) Merge(o Trust) Trust {
	t.Keys = append(slices.Clip(t.Keys), o.Keys...)
	t.Roots = append(slices.Clip(t.Roots), o.Roots...)
	t.TimestampRoots = append(slices.Clip(t.TimestampRoots), o.TimestampRoots...)
	if o.Revocations != nil {
		t.Revocations = o.Revocations
	}
	return t
}

// Empty is true when nothing is trusted (no key, no root).
func (t Trust) Empty() bool { return len(t.Keys) == 0 && len(t.Roots) == 0 }

// Signer is who signed a verified record.
type Signer struct {
	// KeyID is the signing key's id (for a certificate, its public key's).
	KeyID string
	// Node and Serial name the certificate (empty for a key without one); NotBefore and
	// NotAfter are its validity.
	Node                string
	Serial              string
	NotBefore, NotAfter time.Time
	// SignedAt is the timestamp authority's time of the signature (zero without a certificate).
	SignedAt time.Time
}

// String says who signed, for a person.
func (s Signer) String() string {
	if s.Node == "" {
		return "key " + s.KeyID + " (a published key without a certificate)"
	}
	return fmt.Sprintf("key %s of node %s's certificate %s (valid %s to %s), timestamped %s", s.KeyID, s.Node, s.Serial,
		s.NotBefore.UTC().Format(time.RFC3339), s.NotAfter.UTC().Format(time.RFC3339), s.SignedAt.UTC().Format(time.RFC3339))
}

// bundleJSON is the part of a Sigstore bundle a record uses.
type bundleJSON struct {
	MediaType            string `json:"mediaType"`
	VerificationMaterial struct {
		Certificate *struct {
			RawBytes []byte `json:"rawBytes"`
		} `json:"certificate"`
		X509CertificateChain *struct {
			Certificates []struct {
				RawBytes []byte `json:"rawBytes"`
			} `json:"certificates"`
		} `json:"x509CertificateChain"`
		TimestampVerificationData struct {
			RFC3161Timestamps []struct {
				SignedTimestamp []byte `json:"signedTimestamp"`
			} `json:"rfc3161Timestamps"`
		} `json:"timestampVerificationData"`
	} `json:"verificationMaterial"`
	DSSEEnvelope json.RawMessage `json:"dsseEnvelope"`
}

// certified checks a bundle's certificate and timestamp against trust and returns the
// envelope, the certificate's key and who signed. The DSSE signature is checked by the caller
// with that key.
func certified(b bundleJSON, sig []byte, trust Trust) (*PublicKey, Signer, error) {
	if !strings.HasPrefix(b.MediaType, "application/vnd.dev.sigstore.bundle") {
		return nil, Signer{}, fmt.Errorf("custody record's media type is %q, not a Sigstore bundle", b.MediaType)
	}
	var der []byte
	switch vm := b.VerificationMaterial; {
	case vm.Certificate != nil:
		der = vm.Certificate.RawBytes
	case vm.X509CertificateChain != nil && len(vm.X509CertificateChain.Certificates) > 0:
		der = vm.X509CertificateChain.Certificates[0].RawBytes
	default:
		return nil, Signer{}, errors.New("the custody record's bundle has no certificate")
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, Signer{}, fmt.Errorf("the custody record's certificate: %w", err)
	}
	node, err := CertNode(cert)
	if err != nil {
		return nil, Signer{}, err
	}
	s := Signer{Node: node, Serial: fmt.Sprintf("%x", cert.SerialNumber), NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}
	if len(trust.Roots) == 0 {
		return nil, s, errors.New("the custody record carries a certificate, but no signer root is trusted (kubectl podcopy key --trusted-root exports the cluster's; pass it with --trusted-root)")
	}
	ts := b.VerificationMaterial.TimestampVerificationData.RFC3161Timestamps
	if len(ts) != 1 {
		return nil, s, fmt.Errorf("the custody record has %d RFC 3161 timestamps, not one: without trusted time a short-lived certificate proves nothing", len(ts))
	}
	at, err := verifyTimestamp(ts[0].SignedTimestamp, sig, trust.TimestampRoots)
	if err != nil {
		return nil, s, err
	}
	s.SignedAt = at
	roots := x509.NewCertPool()
	for _, r := range trust.Roots {
		roots.AddCert(r)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}}); err != nil {
		return nil, s, fmt.Errorf("the custody record's certificate for node %s does not verify against the signer's root at its timestamp %s: %w", node, at.UTC().Format(time.RFC3339), err)
	}
	for _, r := range trust.Revocations {
		if (r.Node != "" && r.Node == node) || (r.Serial != "" && strings.EqualFold(strings.TrimLeft(r.Serial, "0"), strings.TrimLeft(s.Serial, "0"))) {
			if r.From.IsZero() || !at.Before(r.From) {
				what := "node " + r.Node
				if r.Node == "" {
					what = "certificate " + r.Serial
				}
				from := "always"
				if !r.From.IsZero() {
					from = "from " + r.From.UTC().Format(time.RFC3339)
				}
				msg := fmt.Sprintf("REVOKED: %s is revoked %s, and this record was signed at %s", what, from, at.UTC().Format(time.RFC3339))
				if r.Reason != "" {
					msg += " (" + r.Reason + ")"
				}
				return nil, s, errors.New(msg)
			}
		}
	}
	pub, err := newPublicKey(cert.PublicKey)
	if err != nil {
		return nil, s, fmt.Errorf("the custody record's certificate: %w", err)
	}
	s.KeyID = pub.id
	return pub, s, nil
}

// verifyTimestamp checks an RFC 3161 response over SHA-256(sig) against the timestamp
// authority's roots and returns its time.
func verifyTimestamp(resp, sig []byte, roots []*x509.Certificate) (time.Time, error) {
	if len(roots) == 0 {
		return time.Time{}, errors.New("the custody record is timestamped, but no timestamp authority is trusted (the trusted root names none)")
	}
	ts, err := timestamp.ParseResponse(resp)
	if err != nil {
		return time.Time{}, fmt.Errorf("the custody record's timestamp: %w", err)
	}
	sum := sha256.Sum256(sig)
	if ts.HashAlgorithm != crypto.SHA256 || !bytes.Equal(ts.HashedMessage, sum[:]) {
		return time.Time{}, errors.New("the custody record's timestamp is not of its signature")
	}
	p7, err := pkcs7.Parse(ts.RawToken)
	if err != nil {
		return time.Time{}, fmt.Errorf("the custody record's timestamp: %w", err)
	}
	signer := p7.GetOnlySigner()
	if signer == nil {
		return time.Time{}, errors.New("the custody record's timestamp carries no single signer certificate")
	}
	pool, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	for _, c := range p7.Certificates {
		inter.AddCert(c)
	}
	if _, err := signer.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: ts.Time, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}}); err != nil {
		return time.Time{}, fmt.Errorf("the custody record's timestamp is not from the trusted timestamp authority: %w", err)
	}
	return ts.Time, nil
}

// ParseCertificates reads every PEM "CERTIFICATE" block of data.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM \"CERTIFICATE\" block found")
	}
	return certs, nil
}

// RoleHeader is the PEM header that says what a certificate in a trust file is.
const (
	RoleHeader          = "Podcopy-Role"
	RoleSignerRoot      = "signer-root"
	RoleTimestampAuthor = "timestamp-authority"
)

// TrustPEM writes t's keys and roots as one PEM file (kubectl podcopy key): each key with its
// id comment, each certificate with a RoleHeader.
func TrustPEM(t Trust) []byte {
	var b bytes.Buffer
	for _, k := range t.Keys {
		b.Write(k.PEM())
	}
	for _, list := range []struct {
		role, comment string
		certs         []*x509.Certificate
	}{{RoleSignerRoot, "# podcopy signer root: certifies each node's agent key", t.Roots}, {RoleTimestampAuthor, "# podcopy timestamp authority", t.TimestampRoots}} {
		for _, c := range list.certs {
			b.WriteString(list.comment + "\n")
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Headers: map[string]string{RoleHeader: list.role}, Bytes: c.Raw})
		}
	}
	return b.Bytes()
}

// ParseTrustPEM reads what TrustPEM writes (or a file of public keys only).
func ParseTrustPEM(data []byte) (Trust, error) {
	var t Trust
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch blk.Type {
		case "PUBLIC KEY":
			k, err := PublicKeyFromDER(blk.Bytes)
			if err != nil {
				return t, err
			}
			t.Keys = append(t.Keys, k)
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return t, err
			}
			switch blk.Headers[RoleHeader] {
			case RoleSignerRoot:
				t.Roots = append(t.Roots, c)
			case RoleTimestampAuthor:
				t.TimestampRoots = append(t.TimestampRoots, c)
			default:
				return t, fmt.Errorf("a certificate (%s) without a %s header: use kubectl podcopy key's output", c.Subject.CommonName, RoleHeader)
			}
		}
	}
	if t.Empty() {
		return t, errors.New("no PEM \"PUBLIC KEY\" block and no signer root found")
	}
	return t, nil
}

// CertificatesPEM writes certs as PEM.
func CertificatesPEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// IssuerExtension is the OIDC issuer extension of value issuer.
func IssuerExtension(issuer string) (pkix.Extension, error) {
	v, err := asn1.MarshalWithParams(issuer, "utf8")
	return pkix.Extension{Id: OIDIssuer, Value: v}, err
}
