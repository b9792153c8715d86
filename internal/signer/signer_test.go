package signer

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	sgroot "github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/manifest"
)

const agentSA = "system:serviceaccount:podcopy:podcopy-agent"

// cluster is a signer behind TLS whose TokenReviews a fake API server answers: token
// "node-N" is the agent's pod-bound token on node N, "plain" an agent token bound to no pod,
// "other" another ServiceAccount's.
type cluster struct {
	srv  *httptest.Server
	auth Authority
	now  time.Time
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	now := time.Now()
	auth, err := NewAuthority(now)
	if err != nil {
		t.Fatal(err)
	}
	cs := fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "podcopy-revocations", Namespace: "podcopy"},
		Data: map[string]string{"node-lost": "node: lost\nfrom: 2026-01-01T00:00:00Z\nreason: stolen\n"}})
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		tok := tr.Spec.Token
		out := tr.DeepCopy()
		switch {
		case strings.HasPrefix(tok, "node-"):
			out.Status = authnv1.TokenReviewStatus{Authenticated: true, Audiences: tr.Spec.Audiences, User: authnv1.UserInfo{Username: agentSA,
				Extra: map[string]authnv1.ExtraValue{NodeNameExtra: {strings.TrimPrefix(tok, "node-")}, PodNameExtra: {"podcopy-agent-x"}}}}
		case tok == "plain":
			out.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: agentSA}}
		case tok == "other":
			out.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "system:serviceaccount:shop:web",
				Extra: map[string]authnv1.ExtraValue{NodeNameExtra: {"n1"}}}}
		default:
			out.Status = authnv1.TokenReviewStatus{Error: "invalid bearer token"}
		}
		return true, out, nil
	})
	s := &Server{Authority: auth, Client: cs, Audience: DefaultAudience, Agents: []string{agentSA}, OwnNode: "signer-node",
		Validity: time.Hour, Namespace: "podcopy", Revocations: "podcopy-revocations", Log: logr.Discard()}
	srv := httptest.NewTLSServer(s.Handler())
	t.Cleanup(srv.Close)
	return &cluster{srv: srv, auth: auth, now: now}
}

// client is an agent's client on node with token.
func (c *cluster) client(t *testing.T, node, token string) (*Client, *custody.PrivateKey) {
	t.Helper()
	key, err := custody.GenerateEphemeralKey()
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(f, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c.srv.Certificate())
	cl := &Client{URL: c.srv.URL, TLSRoots: func(context.Context) (*x509.CertPool, error) { return pool, nil }, TokenFile: f, Node: node, Key: key}
	return cl, key.Certified(cl)
}

func (c *cluster) trust() custody.Trust {
	return custody.Trust{Roots: []*x509.Certificate{c.auth.CA}, TimestampRoots: []*x509.Certificate{c.auth.TSA, c.auth.CA}}
}

var fileSum = strings.Repeat("ab", 32)

func seal(t *testing.T, key *custody.PrivateKey, node string) []byte {
	t.Helper()
	p := custody.Predicate{Collection: "20261207T090000Z-1a2b3c4d", Pod: custody.Pod{Namespace: "shop", Name: "db-0", UID: "u1"}, Node: node,
		Request: manifest.Request{ID: "r", Paths: []string{"/var/log/a"}}}
	rec, err := custody.Seal(t.Context(), key, []custody.Subject{{Name: "db/var/log/a", SHA256: fileSum}, {Name: custody.ManifestSubject, SHA256: strings.Repeat("cd", 32)}}, p)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestCertificates: a node's agent gets a certificate only for its own node, with a token
// bound to a pod, as an agent, holding the key; never for the signer's node.
func TestCertificates(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	for _, tc := range []struct {
		name, node, token, want string
	}{
		{name: "own node", node: "n1", token: "node-n1"},
		{name: "another node", node: "n1", token: "node-n2", want: `WrongNode: the token is bound to a pod on node "n2"; it cannot ask for a certificate naming node "n1"`},
		{name: "not pod-bound", node: "n1", token: "plain", want: "NotNodeBound"},
		{name: "not an agent", node: "n1", token: "other", want: "NotAnAgent"},
		{name: "bad token", node: "n1", token: "forged", want: "Unauthenticated"},
		{name: "the signer's node", node: "signer-node", token: "node-signer-node", want: "SignerNode"},
		{name: "a revoked node", node: "lost", token: "node-lost", want: `NodeRevoked: node "lost" is revoked from 2026-01-01T00:00:00Z (stolen)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cl, _ := c.client(t, tc.node, tc.token)
			der, err := cl.Certificate(t.Context())
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(der)
			if err != nil {
				t.Fatal(err)
			}
			if node, _ := custody.CertNode(cert); node != tc.node {
				t.Errorf("certificate names node %q", node)
			}
			if life := cert.NotAfter.Sub(cert.NotBefore); life > time.Hour+2*time.Minute {
				t.Errorf("certificate lives %s", life)
			}
		})
	}
}

// TestProofOfPossession: a request with a key the caller does not hold is refused.
func TestProofOfPossession(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cl, _ := c.client(t, "n1", "node-n1")
	other, _ := custody.GenerateEphemeralKey()
	pub, _ := x509.MarshalPKIXPublicKey(other.Public().Public())
	proof, _ := cl.Key.Sign(t.Context(), []byte(ProofPrefix+"n1")) // signed by a key that is not the one asked for
	body, _ := json.Marshal(Request{Node: "n1", PublicKey: pub, Proof: proof})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, c.srv.URL+CertificatePath, strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer node-n1")
	resp, err := c.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
}

// TestCertifiedRecords: a record sealed with a certified key is a Sigstore bundle that
// verifies with the roots, names its node, carries trusted time; a record claiming another
// node, a changed record, a revoked node after its revocation, and a record without the
// roots all fail; one signed before the revocation still verifies.
func TestCertifiedRecords(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	_, key1 := c.client(t, "n1", "node-n1")
	_, key2 := c.client(t, "n2", "node-n2")
	rec := seal(t, key1, "n1")
	r, err := custody.Verify(t.Context(), rec, c.trust())
	if err != nil {
		t.Fatal(err)
	}
	if r.Signer.Node != "n1" || r.Signer.SignedAt.IsZero() || r.Signer.SignedAt.Before(c.now.Add(-time.Minute)) {
		t.Errorf("signer = %+v", r.Signer)
	}
	at := r.Signer.SignedAt
	forged := seal(t, key2, "n1") // node 2's certificate, a record that claims node 1
	tampered := []byte(strings.Replace(string(rec), `"payload":"`, `"payload":"eyJ`, 1))
	for _, tc := range []struct {
		name  string
		rec   []byte
		trust func(custody.Trust) custody.Trust
		want  string
	}{
		{name: "another node's certificate", rec: forged, want: `says it was written on node "n1", but it is signed with node n2's certificate`},
		{name: "changed", rec: tampered, want: "does not verify"},
		{name: "no roots", rec: rec, trust: func(custody.Trust) custody.Trust { return custody.Trust{} }, want: "no signer root is trusted"},
		{name: "only the old key", rec: rec, trust: func(t custody.Trust) custody.Trust { t.Roots = nil; return t }, want: "no signer root is trusted"},
		{name: "revoked from before", rec: rec, trust: func(t custody.Trust) custody.Trust {
			t.Revocations = []custody.Revocation{{Node: "n1", From: at.Add(-time.Second), Reason: "node compromised"}}
			return t
		}, want: "REVOKED: node n1 is revoked from"},
		{name: "revoked after", rec: rec, trust: func(t custody.Trust) custody.Trust {
			t.Revocations = []custody.Revocation{{Node: "n1", From: at.Add(time.Minute)}}
			return t
		}},
		{name: "another node revoked", rec: rec, trust: func(t custody.Trust) custody.Trust {
			t.Revocations = []custody.Revocation{{Node: "n2"}}
			return t
		}},
		{name: "its certificate revoked", rec: rec, trust: func(t custody.Trust) custody.Trust {
			t.Revocations = []custody.Revocation{{Serial: r.Signer.Serial}}
			return t
		}, want: "REVOKED: certificate"},
		{name: "another authority's timestamp", rec: rec, trust: func(t custody.Trust) custody.Trust {
			other, _ := NewAuthority(time.Now())
			t.TimestampRoots = []*x509.Certificate{other.TSA, other.CA}
			return t
		}, want: "not from the trusted timestamp authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := c.trust()
			if tc.trust != nil {
				tr = tc.trust(tr)
			}
			_, err := custody.Verify(t.Context(), tc.rec, tr)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestSigstoreVerifies: sigstore-go verifies the record, as a bundle, with the trusted root
// TrustedRoot exports (no transparency log, signed timestamps), for the subject's digest and
// the node's identity; a digest the record does not sign fails.
func TestSigstoreVerifies(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	_, key := c.client(t, "n1", "node-n1")
	rec := seal(t, key, "n1")
	trJSON, err := custody.TrustedRoot(c.trust(), "https://podcopy.dev/signer")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := sgroot.NewTrustedRootFromJSON(trJSON)
	if err != nil {
		t.Fatal(err)
	}
	var b sgbundle.Bundle
	if err := b.UnmarshalJSON(rec); err != nil {
		t.Fatal(err)
	}
	v, err := sgverify.NewVerifier(tr, sgverify.WithSignedTimestamps(1))
	if err != nil {
		t.Fatal(err)
	}
	id, err := sgverify.NewShortCertificateIdentity(DefaultIssuer, "", custody.NodeURI("n1"), "")
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := hex.DecodeString(fileSum)
	if _, err := v.Verify(&b, sgverify.NewPolicy(sgverify.WithArtifactDigest("sha256", sum), sgverify.WithCertificateIdentity(id))); err != nil {
		t.Fatalf("sigstore-go: %v", err)
	}
	wrong := sha256.Sum256([]byte("not collected"))
	if _, err := v.Verify(&b, sgverify.NewPolicy(sgverify.WithArtifactDigest("sha256", wrong[:]), sgverify.WithCertificateIdentity(id))); err == nil {
		t.Fatal("sigstore-go verified a digest the record does not sign")
	}
	id2, _ := sgverify.NewShortCertificateIdentity(DefaultIssuer, "", custody.NodeURI("n2"), "")
	if _, err := v.Verify(&b, sgverify.NewPolicy(sgverify.WithArtifactDigest("sha256", sum), sgverify.WithCertificateIdentity(id2))); err == nil {
		t.Fatal("sigstore-go accepted the record as node n2's")
	}
}
