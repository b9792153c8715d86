package custody

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/podcopy/podcopy/internal/testkit/golden"
	"github.com/podcopy/podcopy/pkg/manifest"
)

// fixedKey is an ed25519 key for the golden file (ed25519 signatures are deterministic).
const fixedKey = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAardnpexNKQ8N6MM6gZc5D/OAkVTIJ7reR1iy+hXbYn
-----END PRIVATE KEY-----
`

func header() manifest.Header {
	return manifest.Header{
		Collection: "20261202T101500Z-1a2b3c4d",
		Request:    manifest.Request{ID: "1a2b3c4d-0000", Paths: []string{"/var/log/app.log"}, Mode: "once"},
		Source: manifest.Source{Namespace: "shop", Pod: "db-0", UID: "uid-1", Container: "db", ContainerID: "containerd://abc",
			Node: "n1", Image: "mysql:8", ImageID: "docker.io/library/mysql@sha256:0123"},
		Destination:    manifest.Destination{Namespace: "podcopy", Pod: "analysis-0", Container: "analysis", Dir: "/collect/shop/db-0/20261202T101500Z-1a2b3c4d"},
		Agent:          manifest.Agent{Version: "v1", Node: "n1"},
		StartTime:      "2026-12-02T10:15:00Z",
		CompletionTime: "2026-12-02T10:15:02Z",
		RequestedBy:    "alice", RequestOrigin: "update",
	}
}

var subjects = []Subject{
	{Name: "db/var/log/app.log", SHA256: strings.Repeat("ab", 32)},
	{Name: ManifestSubject, SHA256: strings.Repeat("cd", 32)},
}

func mustKey(t *testing.T, pemText string) *PrivateKey {
	t.Helper()
	k, err := ParsePrivateKey([]byte(pemText))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ecdsaKey(t *testing.T) *PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return mustKey(t, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})))
}

func TestSealVerify(t *testing.T) {
	t.Parallel()
	genKey, _, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]*PrivateKey{"ed25519": mustKey(t, fixedKey), "ecdsa-p256": ecdsaKey(t), "generated": genKey} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := PredicateFor(header(), manifest.Totals{Files: 1, Bytes: 10}, "tar")
			env, err := Seal(t.Context(), key, subjects, p)
			if err != nil {
				t.Fatal(err)
			}
			other, _, _ := GenerateKey()
			// Rotation: any of several published keys verifies.
			rec, err := Verify(t.Context(), env, Trust{Keys: []*PublicKey{other.Public(), key.Public()}})
			if err != nil {
				t.Fatal(err)
			}
			if rec.KeyID != key.Public().ID() || rec.Subjects["db/var/log/app.log"] != subjects[0].SHA256 || rec.Predicate.Container.ImageDigest != "sha256:0123" || rec.Predicate.Pod.UID != "uid-1" {
				t.Fatalf("record %+v", rec)
			}
			if _, err := Verify(t.Context(), env, Trust{Keys: []*PublicKey{other.Public()}}); err == nil {
				t.Fatal("verified with a key that did not sign")
			}
			if _, err := Verify(t.Context(), env, Trust{}); err != ErrNoKeys {
				t.Fatalf("no keys: %v", err)
			}
		})
	}
}

// A record whose statement was rewritten (a digest changed) does not verify, whatever
// else is kept.
func TestVerifyRefusesRewrittenStatement(t *testing.T) {
	t.Parallel()
	key := mustKey(t, fixedKey)
	env, err := Seal(t.Context(), key, subjects, PredicateFor(header(), manifest.Totals{}, "tar"))
	if err != nil {
		t.Fatal(err)
	}
	var e dsse.Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	body, _ := e.DecodeB64Payload()
	for name, mutate := range map[string]func(e dsse.Envelope) dsse.Envelope{
		"digest": func(e dsse.Envelope) dsse.Envelope {
			e.Payload = base64.StdEncoding.EncodeToString(bytes.Replace(body, []byte(strings.Repeat("ab", 32)), []byte(strings.Repeat("ef", 32)), 1))
			return e
		},
		"payload type": func(e dsse.Envelope) dsse.Envelope { e.PayloadType = "text/plain"; return e },
		"no signature": func(e dsse.Envelope) dsse.Envelope { e.Signatures = nil; return e },
	} {
		b, _ := json.Marshal(mutate(e))
		if _, err := Verify(t.Context(), b, Trust{Keys: []*PublicKey{key.Public()}}); err == nil {
			t.Errorf("%s: a rewritten record verified", name)
		}
	}
}

// The statement is a contract file: its decoded form is compared with a golden file.
func TestStatementGolden(t *testing.T) {
	t.Parallel()
	key := mustKey(t, fixedKey)
	p := PredicateFor(header(), manifest.Totals{Files: 1, Bytes: 10, Compression: "none", ArchiveBytes: 3072, SourceBytes: 3072, CompressionRatio: 1}, "helper")
	env, err := Seal(t.Context(), key, subjects, p)
	if err != nil {
		t.Fatal(err)
	}
	var e dsse.Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	body, _ := e.DecodeB64Payload()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(map[string]any{"payloadType": e.PayloadType, "keyid": e.Signatures[0].KeyID, "statement": v}, "", "  ")
	golden.Check(t, filepath.Join("testdata", "custody.golden.json"), append(got, '\n'))
}

func TestKeys(t *testing.T) {
	t.Parallel()
	key := mustKey(t, fixedKey)
	var pems []byte
	for _, k := range []*PrivateKey{key, ecdsaKey(t)} {
		pems = append(pems, k.Public().PEM()...)
	}
	keys, err := ParsePublicKeys(pems)
	if err != nil || len(keys) != 2 || keys[0].ID() != key.Public().ID() {
		t.Fatalf("parsed %d keys: %v", len(keys), err)
	}
	for name, text := range map[string]string{
		"empty":      "",
		"no key":     "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"p384":       p384(t),
		"not a pem":  "hello",
		"bad pkcs8":  "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"public key": string(key.Public().PEM()),
	} {
		if _, err := ParsePrivateKey([]byte(text)); err == nil {
			t.Errorf("%s: parsed as a private key", name)
		}
	}
	if _, err := ParsePublicKeys([]byte("nothing")); err == nil {
		t.Error("no public key parsed without error")
	}
}

func p384(t *testing.T) string {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func TestImageDigest(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"docker.io/library/mysql@sha256:abc": "sha256:abc",
		"sha256:abc":                         "sha256:abc",
		"podcopy.local/x:dev":                "",
	} {
		if got := ImageDigest(in); got != want {
			t.Errorf("ImageDigest(%q) = %q, want %q", in, got, want)
		}
	}
}
