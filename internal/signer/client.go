package signer

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/digitorus/timestamp"

	"github.com/podcopy/podcopy/pkg/custody"
)

// Client is an agent's side of the signer: it keeps a certificate for the agent's in-memory
// key (renewed at half its life) and asks for timestamps. It implements custody.Certifier.
type Client struct {
	// URL is the signer's base URL; TLSRoots give the CAs its TLS certificate chains to (read
	// once, at the first request that succeeds).
	URL      string
	TLSRoots func(ctx context.Context) (*x509.CertPool, error)
	// TokenFile holds the agent pod's projected ServiceAccount token (read at each request:
	// the kubelet rotates it).
	TokenFile string
	// Node is the agent's node; Key the in-memory key to certify.
	Node string
	Key  *custody.PrivateKey
	Now  func() time.Time

	mu            sync.Mutex
	http          *http.Client
	der           []byte
	cert          *x509.Certificate
	roots, tRoots []*x509.Certificate
}

var _ custody.Certifier = (*Client)(nil)

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Certificate is the key's certificate, asking the signer for a new one when there is none
// or the one held is past half its life.
func (c *Client) Certificate(ctx context.Context) ([]byte, error) {
	hc, err := c.client(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if c.cert != nil && now.Before(c.cert.NotBefore.Add(c.cert.NotAfter.Sub(c.cert.NotBefore)/2)) {
		return c.der, nil
	}
	if err := c.renew(ctx, hc); err != nil {
		if c.cert != nil && now.Add(time.Minute).Before(c.cert.NotAfter) {
			return c.der, nil // still valid: renewal is retried at the next record
		}
		return nil, err
	}
	return c.der, nil
}

// client is the HTTP client trusting TLSRoots, made at first use.
func (c *Client) client(ctx context.Context) (*http.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.http != nil {
		return c.http, nil
	}
	pool, err := c.TLSRoots(ctx)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	c.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return c.http, nil
}

// Held is the certificate held now (nil before the first).
func (c *Client) Held() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert
}

func (c *Client) renew(ctx context.Context, hc *http.Client) error {
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return fmt.Errorf("the agent's signer token: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(c.Key.Public().Public())
	if err != nil {
		return err
	}
	proof, err := c.Key.Sign(ctx, []byte(ProofPrefix+c.Node))
	if err != nil {
		return err
	}
	body, err := json.Marshal(Request{Node: c.Node, PublicKey: pub, Proof: proof})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.URL, "/")+CertificatePath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("asking the signer for a certificate: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the signer refused a certificate for node %s: %s %s", c.Node, resp.Status, strings.TrimSpace(string(data)))
	}
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("the signer's answer: %w", err)
	}
	cert, err := x509.ParseCertificate(r.Certificate)
	if err != nil {
		return fmt.Errorf("the signer's certificate: %w", err)
	}
	roots, err := parseAll(r.Roots)
	if err != nil {
		return err
	}
	tRoots, err := parseAll(r.TimestampRoots)
	if err != nil {
		return err
	}
	if node, err := custody.CertNode(cert); err != nil || node != c.Node {
		return fmt.Errorf("the signer's certificate names node %q, not %q (%v)", node, c.Node, err)
	}
	c.der, c.cert, c.roots, c.tRoots = r.Certificate, cert, roots, tRoots
	return nil
}

func parseAll(ders [][]byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, fmt.Errorf("the signer's root: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("the signer sent no root")
	}
	return out, nil
}

// Timestamp asks the timestamp authority for an RFC 3161 timestamp over SHA-256(signature).
func (c *Client) Timestamp(ctx context.Context, signature []byte) ([]byte, error) {
	hc, err := c.client(ctx)
	if err != nil {
		return nil, err
	}
	q, err := timestamp.CreateRequest(bytes.NewReader(signature), &timestamp.RequestOptions{Hash: crypto.SHA256, Certificates: true})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.URL, "/")+TimestampPath, bytes.NewReader(q))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/timestamp-query")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("asking for a timestamp: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the timestamp authority answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	ts, err := timestamp.ParseResponse(data)
	if err != nil {
		return nil, fmt.Errorf("the timestamp authority's answer: %w", err)
	}
	sum := sha256.Sum256(signature)
	if !bytes.Equal(ts.HashedMessage, sum[:]) {
		return nil, errors.New("the timestamp authority's answer is not over this signature")
	}
	return data, nil
}

// Roots are the signer's and the timestamp authority's roots, as the signer last sent them.
func (c *Client) Roots() (signer, timestamps []*x509.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.roots, c.tRoots
}
