package custody

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// KeyID is a public key's id: the hex SHA-256 of its PKIX (SubjectPublicKeyInfo) DER, the
// same for the signer and every verifier, so a signature names the key it needs.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// PrivateKey is the agent's signing key: ed25519 or ECDSA P-256. It implements
// dsse.SignerVerifier.
type PrivateKey struct {
	key crypto.Signer
	pub *PublicKey
	// certifier, when set, certifies the key and timestamps its signatures (Certified).
	certifier Certifier
}

// PublicKey verifies custody records. It implements dsse.Verifier.
type PublicKey struct {
	key crypto.PublicKey
	id  string
}

func newPublicKey(pub crypto.PublicKey) (*PublicKey, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on curve %s: only P-256 is accepted", k.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("public key of type %T: only ed25519 and ECDSA P-256 are accepted", pub)
	}
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	return &PublicKey{key: pub, id: id}, nil
}

// ID is the key's id (KeyID).
func (k *PublicKey) ID() string { return k.id }

// KeyID implements dsse.Verifier.
func (k *PublicKey) KeyID() (string, error) { return k.id, nil }

// Public implements dsse.Verifier.
func (k *PublicKey) Public() crypto.PublicKey { return k.key }

// Verify implements dsse.Verifier: data is the DSSE pre-authentication encoding.
func (k *PublicKey) Verify(_ context.Context, data, sig []byte) error {
	switch pub := k.key.(type) {
	case ed25519.PublicKey:
		if ed25519.Verify(pub, data, sig) {
			return nil
		}
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(data)
		if ecdsa.VerifyASN1(pub, sum[:], sig) {
			return nil
		}
	}
	return errors.New("signature does not verify")
}

// PEM is the key as a PEM "PUBLIC KEY" block, preceded by a comment line with its id.
func (k *PublicKey) PEM() []byte {
	der, _ := x509.MarshalPKIXPublicKey(k.key) // it marshalled in newPublicKey
	return append([]byte("# podcopy custody key "+k.id+"\n"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})...)
}

// Public is the key's public half.
func (k *PrivateKey) Public() *PublicKey { return k.pub }

// KeyID implements dsse.Signer.
func (k *PrivateKey) KeyID() (string, error) { return k.pub.id, nil }

// Sign implements dsse.Signer: ed25519 over data, ECDSA P-256 over its SHA-256.
func (k *PrivateKey) Sign(_ context.Context, data []byte) ([]byte, error) {
	switch key := k.key.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(key, data), nil
	case *ecdsa.PrivateKey:
		sum := sha256.Sum256(data)
		return ecdsa.SignASN1(rand.Reader, key, sum[:])
	}
	return nil, fmt.Errorf("unsupported key %T", k.key)
}

// signsDigest is true for a key that signs a message's SHA-256 (ECDSA P-256), which can be
// computed as the message streams by; ed25519 signs the whole message.
func (k *PrivateKey) signsDigest() bool {
	_, ok := k.key.(*ecdsa.PrivateKey)
	return ok
}

// signDigest signs sum, the SHA-256 of a message, for a key that signsDigest.
func (k *PrivateKey) signDigest(sum []byte) ([]byte, error) {
	key, ok := k.key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T key signs the whole message, not its digest", k.key)
	}
	return ecdsa.SignASN1(rand.Reader, key, sum)
}

// GenerateKey makes a new ECDSA P-256 key (cosign's default: it signs a record's SHA-256, so
// a record is signed as it streams) and returns it with its PKCS#8 PEM.
func GenerateKey() (*PrivateKey, []byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	k, err := newPrivateKey(priv)
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), err
}

func newPrivateKey(s crypto.Signer) (*PrivateKey, error) {
	pub, err := newPublicKey(s.Public())
	if err != nil {
		return nil, err
	}
	return &PrivateKey{key: s, pub: pub}, nil
}

// ParsePrivateKey reads the first private key of data: PKCS#8 ("PRIVATE KEY", ed25519 or
// ECDSA P-256, as `openssl genpkey` writes) or SEC 1 ("EC PRIVATE KEY", as Helm's
// genPrivateKey "ecdsa" writes).
func ParsePrivateKey(data []byte) (*PrivateKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found (want PKCS#8 \"PRIVATE KEY\" or \"EC PRIVATE KEY\")")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing the %s: %w", strings.ToLower(b.Type), err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", key)
		}
		return newPrivateKey(s)
	}
}

// LoadPrivateKey reads ParsePrivateKey's formats from a file.
func LoadPrivateKey(file string) (*PrivateKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return k, nil
}

// PublicKeyFromDER reads a PKIX (SubjectPublicKeyInfo) DER public key of an accepted type.
func PublicKeyFromDER(der []byte) (*PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("parsing a public key: %w", err)
	}
	return newPublicKey(pub)
}

// ParsePublicKeys reads every PEM "PUBLIC KEY" block of data (text around the blocks, such
// as the id comments PEM writes, is ignored). It fails when none is found.
func ParsePublicKeys(data []byte) ([]*PublicKey, error) {
	var keys []*PublicKey
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "PUBLIC KEY" {
			continue
		}
		k, err := PublicKeyFromDER(b.Bytes)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM \"PUBLIC KEY\" block found")
	}
	return keys, nil
}
