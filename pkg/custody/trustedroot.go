package custody

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// TrustedRootMediaType is the media type of a Sigstore trusted root (v0.1).
const TrustedRootMediaType = "application/vnd.dev.sigstore.trustedroot+json;version=0.1"

// trustedRoot is the part of a Sigstore TrustedRoot podcopy writes and reads: certificate
// authorities and timestamp authorities, no transparency log.
type trustedRoot struct {
	MediaType              string      `json:"mediaType"`
	Tlogs                  []any       `json:"tlogs"`
	Ctlogs                 []any       `json:"ctlogs"`
	CertificateAuthorities []authority `json:"certificateAuthorities"`
	TimestampAuthorities   []authority `json:"timestampAuthorities"`
}

type authority struct {
	Subject struct {
		Organization string `json:"organization"`
		CommonName   string `json:"commonName"`
	} `json:"subject"`
	URI       string `json:"uri,omitempty"`
	CertChain struct {
		Certificates []struct {
			RawBytes []byte `json:"rawBytes"`
		} `json:"certificates"`
	} `json:"certChain"`
	ValidFor struct {
		Start time.Time  `json:"start"`
		End   *time.Time `json:"end,omitempty"`
	} `json:"validFor"`
}

// authorityOf is one authority of chain (leaf first, root last).
func authorityOf(chain []*x509.Certificate, uri string) authority {
	var a authority
	a.Subject.CommonName = chain[0].Subject.CommonName
	if o := chain[0].Subject.Organization; len(o) > 0 {
		a.Subject.Organization = o[0]
	}
	a.URI = uri
	for _, c := range chain {
		a.CertChain.Certificates = append(a.CertChain.Certificates, struct {
			RawBytes []byte `json:"rawBytes"`
		}{c.Raw})
	}
	a.ValidFor.Start = chain[len(chain)-1].NotBefore.UTC()
	return a
}

// TrustedRoot writes t's roots as a Sigstore trusted root: each signer root a certificate
// authority, the timestamp chain (leaf first) one timestamp authority; cosign (--trusted-root)
// and sigstore-go verify custody bundles with it offline. Keys and revocations are not part
// of the format.
func TrustedRoot(t Trust, uri string) ([]byte, error) {
	if len(t.Roots) == 0 || len(t.TimestampRoots) == 0 {
		return nil, errors.New("no signer root or no timestamp authority is published: the cluster's signer is not installed (records are signed by a bare key; kubectl podcopy key prints it)")
	}
	tr := trustedRoot{MediaType: TrustedRootMediaType, Tlogs: []any{}, Ctlogs: []any{}}
	for _, r := range t.Roots {
		tr.CertificateAuthorities = append(tr.CertificateAuthorities, authorityOf([]*x509.Certificate{r}, uri))
	}
	tr.TimestampAuthorities = []authority{authorityOf(t.TimestampRoots, uri)}
	return json.MarshalIndent(tr, "", "  ")
}

// ParseTrustedRoot reads a trusted root TrustedRoot wrote (or any Sigstore trusted root's
// certificate and timestamp authorities).
func ParseTrustedRoot(data []byte) (Trust, error) {
	var tr trustedRoot
	if err := json.Unmarshal(data, &tr); err != nil {
		return Trust{}, fmt.Errorf("not a Sigstore trusted root: %w", err)
	}
	var t Trust
	for _, list := range []struct {
		as  []authority
		out *[]*x509.Certificate
	}{{tr.CertificateAuthorities, &t.Roots}, {tr.TimestampAuthorities, &t.TimestampRoots}} {
		for _, a := range list.as {
			for _, c := range a.CertChain.Certificates {
				cert, err := x509.ParseCertificate(c.RawBytes)
				if err != nil {
					return Trust{}, fmt.Errorf("trusted root: %w", err)
				}
				*list.out = append(*list.out, cert)
			}
		}
	}
	if len(t.Roots) == 0 {
		return Trust{}, errors.New("the trusted root names no certificate authority")
	}
	return t, nil
}
