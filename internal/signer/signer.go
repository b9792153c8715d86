// Package signer is podcopy's certificate and timestamp authority. It runs apart from the
// nodes it certifies, and gives each agent a short-lived certificate for a key the agent made
// in memory, naming the node the agent's pod-bound ServiceAccount token is bound to (a
// TokenReview says which); and RFC 3161 timestamps over record signatures, so a verifier
// knows a record was signed while its certificate was valid, and before any revocation.
//
// Why not Fulcio: its kubernetes issuer puts only the ServiceAccount in the certificate (the
// pod and node claims are dropped), and the node is the one thing the binding needs. The
// certificates here carry Fulcio's issuer extension and a URI SAN, so the Sigstore tools read
// them the same way.
package signer

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/digitorus/timestamp"
	"github.com/go-logr/logr"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/pkg/custody"
)

// Paths the signer serves.
const (
	// CertificatePath issues an agent's certificate (POST, JSON, bearer token).
	CertificatePath = "/v1/certificate"
	// TimestampPath answers RFC 3161 requests (POST application/timestamp-query), the path of
	// Sigstore's timestamp authority.
	TimestampPath = "/api/v1/timestamp"
	// NodeNameExtra is the TokenReview extra a pod-bound token carries its node in.
	NodeNameExtra = "authentication.kubernetes.io/node-name"
	// PodNameExtra names the pod the token is bound to.
	PodNameExtra = "authentication.kubernetes.io/pod-name"
	// DefaultAudience is the audience of the projected token agents present.
	DefaultAudience = "podcopy-signer"
	// DefaultIssuer is the issuer written in agent certificates (Fulcio's issuer extension).
	DefaultIssuer = "https://podcopy.dev/signer"
	// ProofPrefix starts what an agent signs to prove it holds the key: the prefix, then the node.
	ProofPrefix     = "podcopy-signer certificate request for node "
	maxRequestBytes = 64 << 10
)

// Request is an agent's certificate request.
type Request struct {
	// Node is the node the certificate is to name: the one the token is bound to.
	Node string `json:"node"`
	// PublicKey is the key's PKIX DER; Proof is its signature over ProofPrefix+Node.
	PublicKey []byte `json:"publicKey"`
	Proof     []byte `json:"proof"`
}

// Response is an issued certificate with the roots that verify it and the timestamps.
type Response struct {
	Certificate    []byte   `json:"certificate"`
	Roots          [][]byte `json:"roots"`
	TimestampRoots [][]byte `json:"timestampRoots"`
}

// Authority is the CA and the timestamp authority's keys and certificates.
type Authority struct {
	CA, TSA       *x509.Certificate
	CAKey, TSAKey crypto.Signer
}

// Server issues certificates and timestamps.
type Server struct {
	Authority
	// Client makes TokenReviews.
	Client kubernetes.Interface
	// Audience the agent tokens must be for; Agents are the ServiceAccount user names that
	// may ask ("system:serviceaccount:NS:NAME").
	Audience string
	Agents   []string
	// OwnNode is the node the signer runs on: never certified (root there holds the CA).
	OwnNode string
	// Validity is a certificate's lifetime; Issuer goes in its issuer extension.
	Validity time.Duration
	Issuer   string
	// Namespace and Revocations name the revocations ConfigMap: a revoked node (from now or
	// earlier) gets no new certificate.
	Namespace, Revocations string
	Now                    func() time.Time
	Log                    logr.Logger
}

// Handler serves the certificate and timestamp routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+CertificatePath, s.certificate)
	mux.HandleFunc("POST "+TimestampPath, s.timestamp)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// refuse answers code with a message that says why, and logs it.
func (s *Server) refuse(w http.ResponseWriter, code int, reason, msg string, kv ...any) {
	s.Log.Info("certificate refused", append([]any{"reason", reason, "why", msg}, kv...)...)
	http.Error(w, reason+": "+msg, code)
}

func (s *Server) certificate(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		s.refuse(w, http.StatusUnauthorized, "Unauthenticated", "no bearer token: present the agent's projected ServiceAccount token")
		return
	}
	var req Request
	if err := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes)).Decode(&req); err != nil {
		s.refuse(w, http.StatusBadRequest, "BadRequest", "the request is not JSON: "+err.Error())
		return
	}
	tr, err := s.Client.AuthenticationV1().TokenReviews().Create(r.Context(), &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{s.Audience}}}, metav1.CreateOptions{})
	if err != nil {
		s.refuse(w, http.StatusServiceUnavailable, "TokenReviewFailed", err.Error())
		return
	}
	st := tr.Status
	if !st.Authenticated {
		s.refuse(w, http.StatusUnauthorized, "Unauthenticated", "the API server does not accept the token for audience "+s.Audience+": "+st.Error)
		return
	}
	user := st.User.Username
	if !slices.Contains(s.Agents, user) {
		s.refuse(w, http.StatusForbidden, "NotAnAgent", user+" is not an agent's ServiceAccount", "user", user)
		return
	}
	nodes, pods := st.User.Extra[NodeNameExtra], st.User.Extra[PodNameExtra]
	if len(nodes) != 1 || nodes[0] == "" {
		s.refuse(w, http.StatusForbidden, "NotNodeBound", "the token is not bound to a pod on a node (no "+NodeNameExtra+"): present the projected token of the agent's pod", "user", user)
		return
	}
	node := nodes[0]
	if req.Node != node {
		s.refuse(w, http.StatusForbidden, "WrongNode", fmt.Sprintf("the token is bound to a pod on node %q; it cannot ask for a certificate naming node %q", node, req.Node), "user", user, "pod", pods, "node", node)
		return
	}
	if node == s.OwnNode {
		s.refuse(w, http.StatusForbidden, "SignerNode", fmt.Sprintf("the signer runs on node %q and certifies no agent there: root on that node holds the signer's key", node), "pod", pods)
		return
	}
	if s.Revocations != "" {
		rs, err := custody.PublishedRevocations(r.Context(), s.Client, s.Namespace, s.Revocations)
		if err != nil {
			s.refuse(w, http.StatusServiceUnavailable, "RevocationsUnreadable", err.Error(), "node", node)
			return
		}
		for _, rv := range rs {
			if rv.Node == node && !s.now().Before(rv.From) {
				s.refuse(w, http.StatusForbidden, "NodeRevoked", fmt.Sprintf("node %q is revoked from %s (%s)", node, rv.From.UTC().Format(time.RFC3339), rv.Reason), "node", node)
				return
			}
		}
	}
	key, err := custody.PublicKeyFromDER(req.PublicKey)
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "BadKey", err.Error(), "node", node)
		return
	}
	if err := key.Verify(r.Context(), []byte(ProofPrefix+node), req.Proof); err != nil {
		s.refuse(w, http.StatusBadRequest, "NoProof", "the proof of possession does not verify with the key", "node", node)
		return
	}
	now := s.now()
	der, serial, err := s.issue(key.Public(), node, now)
	if err != nil {
		s.refuse(w, http.StatusInternalServerError, "IssueFailed", err.Error(), "node", node)
		return
	}
	s.Log.Info("certificate issued", "node", node, "pod", pods, "serial", fmt.Sprintf("%x", serial), "keyID", key.ID(), "notAfter", now.Add(s.Validity).UTC().Format(time.RFC3339))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(Response{Certificate: der, Roots: [][]byte{s.CA.Raw}, TimestampRoots: [][]byte{s.TSA.Raw, s.CA.Raw}})
}

// issue signs a certificate for pub naming node, valid for s.Validity from now.
func (s *Server) issue(pub crypto.PublicKey, node string, now time.Time) ([]byte, *big.Int, error) {
	serial, err := randSerial()
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(custody.NodeURI(node))
	if err != nil {
		return nil, nil, err
	}
	issuer := s.Issuer
	if issuer == "" {
		issuer = DefaultIssuer
	}
	ext, err := custody.IssuerExtension(issuer)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:    serial,
		Subject:         pkix.Name{Organization: []string{"podcopy"}, CommonName: node},
		URIs:            []*url.URL{u},
		NotBefore:       now.Add(-time.Minute),
		NotAfter:        now.Add(s.Validity),
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtKeyUsage:     []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{ext},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.CA, pub, s.CAKey)
	return der, serial, err
}

// policyOID is the timestamp policy (Sigstore's timestamp authority's default).
var policyOID = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2}

func (s *Server) timestamp(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := timestamp.ParseRequest(body)
	if err != nil {
		http.Error(w, "not an RFC 3161 request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if req.HashAlgorithm != crypto.SHA256 && req.HashAlgorithm != crypto.SHA384 && req.HashAlgorithm != crypto.SHA512 {
		http.Error(w, "hash algorithm not accepted: use SHA-256", http.StatusBadRequest)
		return
	}
	serial, err := randSerial()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	ts := timestamp.Timestamp{HashAlgorithm: req.HashAlgorithm, HashedMessage: req.HashedMessage, Time: s.now().UTC(),
		Nonce: req.Nonce, Policy: policyOID, SerialNumber: serial, AddTSACertificate: req.Certificates, Accuracy: time.Second}
	if req.Certificates {
		ts.Certificates = []*x509.Certificate{s.CA}
	}
	resp, err := ts.CreateResponseWithOpts(s.TSA, s.TSAKey, crypto.SHA256)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/timestamp-reply")
	_, _ = w.Write(resp)
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// NewAuthority makes a root CA and a timestamp authority certificate under it (both ECDSA
// P-256, valid for ten years).
func NewAuthority(now time.Time) (Authority, error) {
	var a Authority
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return a, err
	}
	tsaKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return a, err
	}
	serial, err := randSerial()
	if err != nil {
		return a, err
	}
	ca := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{Organization: []string{"podcopy"}, CommonName: "podcopy custody signer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return a, err
	}
	if a.CA, err = x509.ParseCertificate(caDER); err != nil {
		return a, err
	}
	if serial, err = randSerial(); err != nil {
		return a, err
	}
	// RFC 3161 §2.3: the timestamping EKU is the only one, and critical (Go would write it
	// non-critical from ExtKeyUsage).
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 8}})
	if err != nil {
		return a, err
	}
	tsa := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{Organization: []string{"podcopy"}, CommonName: "podcopy timestamp authority"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true, Value: eku}}}
	tsaDER, err := x509.CreateCertificate(rand.Reader, tsa, a.CA, &tsaKey.PublicKey, caKey)
	if err != nil {
		return a, err
	}
	if a.TSA, err = x509.ParseCertificate(tsaDER); err != nil {
		return a, err
	}
	a.CAKey, a.TSAKey = caKey, tsaKey
	return a, nil
}

// Secret keys of the authority.
const (
	secretCA     = "ca.crt"
	secretCAKey  = "ca.key"
	secretTSA    = "tsa.crt"
	secretTSAKey = "tsa.key"
)

// LoadOrCreate reads the authority from the Secret name in namespace, creating it with a
// new authority when it does not exist. Only the signer's ServiceAccount may read it.
func LoadOrCreate(ctx context.Context, client kubernetes.Interface, namespace, name string, now time.Time) (Authority, bool, error) {
	secrets := client.CoreV1().Secrets(namespace)
	for range 3 {
		s, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			a, err := parseAuthority(s.Data)
			if err != nil {
				return a, false, fmt.Errorf("the Secret %s/%s: %w", namespace, name, err)
			}
			return a, false, nil
		}
		if !apierrors.IsNotFound(err) {
			return Authority{}, false, err
		}
		a, err := NewAuthority(now)
		if err != nil {
			return a, false, err
		}
		data, err := a.secretData()
		if err != nil {
			return a, false, err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
			Labels: map[string]string{"app.kubernetes.io/name": "podcopy", "app.kubernetes.io/component": "signer"}},
			Type: corev1.SecretTypeOpaque, Data: data}, metav1.CreateOptions{})
		if err == nil {
			return a, true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return a, false, err
		}
	}
	return Authority{}, false, fmt.Errorf("the Secret %s/%s was created and deleted while reading it", namespace, name)
}

func (a Authority) secretData() (map[string][]byte, error) {
	caKey, err := x509.MarshalPKCS8PrivateKey(a.CAKey)
	if err != nil {
		return nil, err
	}
	tsaKey, err := x509.MarshalPKCS8PrivateKey(a.TSAKey)
	if err != nil {
		return nil, err
	}
	enc := func(t string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: t, Bytes: b}) }
	return map[string][]byte{secretCA: enc("CERTIFICATE", a.CA.Raw), secretCAKey: enc("PRIVATE KEY", caKey),
		secretTSA: enc("CERTIFICATE", a.TSA.Raw), secretTSAKey: enc("PRIVATE KEY", tsaKey)}, nil
}

func parseAuthority(data map[string][]byte) (Authority, error) {
	var a Authority
	for _, c := range []struct {
		cert, key string
		outC      **x509.Certificate
		outK      *crypto.Signer
	}{{secretCA, secretCAKey, &a.CA, &a.CAKey}, {secretTSA, secretTSAKey, &a.TSA, &a.TSAKey}} {
		certs, err := custody.ParseCertificates(data[c.cert])
		if err != nil {
			return a, fmt.Errorf("%s: %w", c.cert, err)
		}
		k, err := custody.ParsePrivateKey(data[c.key])
		if err != nil {
			return a, fmt.Errorf("%s: %w", c.key, err)
		}
		*c.outC, *c.outK = certs[0], k.Signer()
	}
	if a.CA == nil || a.TSA == nil {
		return a, errors.New("incomplete")
	}
	return a, nil
}

// ServingCertificate is a TLS certificate for the signer's own service names, issued by its
// CA (clients trust the CA they read from the published ConfigMap).
func (a Authority) ServingCertificate(dnsNames []string, now time.Time) (tlsCert [][]byte, key crypto.Signer, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, err
	}
	var dns []string
	var ips []net.IP
	for _, n := range dnsNames {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{Organization: []string{"podcopy"}, CommonName: "podcopy signer"},
		DNSNames: dns, IPAddresses: ips, NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.CA, &k.PublicKey, a.CAKey)
	if err != nil {
		return nil, nil, err
	}
	return [][]byte{der, a.CA.Raw}, k, nil
}
