package custody

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"strconv"

	"github.com/podcopy/podcopy/pkg/failure"
)

// Sealed is a signed custody record ready to be written: Size bytes, by WriteTo. It holds
// the statement once (the record's base64 is written as it goes), so a record of 100,000
// subjects costs the agent the statement's size, not the several copies a DOM would make.
type Sealed struct {
	pae     []byte // DSSE's pre-authentication encoding: its header, then the statement
	payload []byte // the statement: the end of pae
	keyID   string
	sig     []byte
	// cert and stamp, for a key with a certificate: the record is a Sigstore bundle.
	cert, stamp []byte
}

// SealStream signs the in-toto statement of subjects and predicate p (of predicateType)
// with key. subjects is read twice (once to size the statement) and must yield the same
// subjects both times.
func SealStream(ctx context.Context, key *PrivateKey, subjects iter.Seq[Subject], predicateType string, p any) (*Sealed, error) {
	pred, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var count counter
	if err := writeStatement(&count, subjects, predicateType, pred); err != nil {
		return nil, err
	}
	header := fmt.Sprintf("DSSEv1 %d %s %d ", len(PayloadType), PayloadType, count.n)
	buf := bytes.NewBuffer(make([]byte, 0, len(header)+int(count.n)))
	buf.WriteString(header)
	if err := writeStatement(buf, subjects, predicateType, pred); err != nil {
		return nil, err
	}
	pae := buf.Bytes()
	if int64(len(pae)-len(header)) != count.n {
		return nil, errors.New("custody statement: its subjects changed while it was written")
	}
	sig, err := key.Sign(ctx, pae)
	if err != nil {
		return nil, fmt.Errorf("signing the custody record: %w", err)
	}
	sealed := &Sealed{pae: pae, payload: pae[len(header):], keyID: key.pub.id, sig: sig}
	if c := key.certifier; c != nil {
		if sealed.cert, err = c.Certificate(ctx); err != nil {
			return nil, failure.New(failure.Unsigned, fmt.Errorf("the signing key's certificate: %w", err))
		}
		if sealed.stamp, err = c.Timestamp(ctx, sig); err != nil {
			return nil, failure.New(failure.Unsigned, fmt.Errorf("timestamping the custody record: %w", err))
		}
	}
	return sealed, nil
}

// head and tail surround the statement's base64: the envelope as
// json.MarshalIndent(dsse.Envelope, "", " ") writes it, or, with a certificate, a Sigstore
// bundle around the envelope.
func (s *Sealed) head() string {
	if s.cert != nil {
		b64 := base64.StdEncoding.EncodeToString
		return `{"mediaType":"` + BundleMediaType + `","verificationMaterial":{"certificate":{"rawBytes":"` + b64(s.cert) +
			`"},"tlogEntries":[],"timestampVerificationData":{"rfc3161Timestamps":[{"signedTimestamp":"` + b64(s.stamp) +
			`"}]}},"dsseEnvelope":{"payloadType":"` + PayloadType + `","payload":"`
	}
	return "{\n \"payloadType\": \"" + PayloadType + "\",\n \"payload\": \""
}

func (s *Sealed) tail() string {
	if s.cert != nil {
		return `","signatures":[{"sig":"` + base64.StdEncoding.EncodeToString(s.sig) + `"}]}}`
	}
	return "\",\n \"signatures\": [\n  {\n   \"keyid\": \"" + s.keyID + "\",\n   \"sig\": \"" + base64.StdEncoding.EncodeToString(s.sig) + "\"\n  }\n ]\n}"
}

// Size is the record's size in bytes.
func (s *Sealed) Size() int64 {
	return int64(len(s.head()) + base64.StdEncoding.EncodedLen(len(s.payload)) + len(s.tail()))
}

// WriteTo writes the record (a DSSE envelope, as JSON).
func (s *Sealed) WriteTo(w io.Writer) (int64, error) {
	cw := &counter{w: w}
	if _, err := io.WriteString(cw, s.head()); err != nil {
		return cw.n, err
	}
	enc := base64.NewEncoder(base64.StdEncoding, cw)
	for rest := s.payload; len(rest) > 0; {
		k := min(len(rest), 48<<10) // a multiple of 3: whole base64 quanta
		if _, err := enc.Write(rest[:k]); err != nil {
			return cw.n, err
		}
		rest = rest[k:]
	}
	if err := enc.Close(); err != nil {
		return cw.n, err
	}
	_, err := io.WriteString(cw, s.tail())
	return cw.n, err
}

// Bytes is the whole record.
func (s *Sealed) Bytes() []byte {
	var b bytes.Buffer
	b.Grow(int(s.Size()))
	_, _ = s.WriteTo(&b)
	return b.Bytes()
}

// writeStatement writes the in-toto Statement v1 of subjects and pred (JSON) to w.
func writeStatement(w io.Writer, subjects iter.Seq[Subject], predicateType string, pred []byte) error {
	bw := &errWriter{w: w}
	bw.str(`{"_type":"https://in-toto.io/Statement/v1","subject":[`)
	n := 0
	for s := range subjects {
		if s.Name == "" {
			return errors.New("custody statement: a subject without a name")
		}
		if !isSHA256(s.SHA256) {
			return fmt.Errorf("custody statement: subject %q: %q is not a hex SHA-256", s.Name, s.SHA256)
		}
		if n > 0 {
			bw.str(",")
		}
		n++
		bw.str(`{"name":`)
		bw.json(s.Name)
		bw.str(`,"digest":{"sha256":"` + s.SHA256 + `"}`)
		if s.VersionID != "" || s.Bundle != "" {
			bw.str(`,"annotations":{`)
			sep := ""
			if s.VersionID != "" {
				bw.str(`"` + VersionAnnotation + `":`)
				bw.json(s.VersionID)
				sep = ","
			}
			if s.Bundle != "" {
				bw.str(sep + `"` + BundleAnnotation + `":`)
				bw.json(s.Bundle)
				bw.str(`,"` + BundleOffsetAnnotation + `":` + strconv.FormatInt(s.Offset, 10))
				bw.str(`,"` + BundleSizeAnnotation + `":` + strconv.FormatInt(s.Size, 10))
			}
			bw.str("}")
		}
		bw.str("}")
	}
	if n == 0 {
		return errors.New("custody statement: no subject")
	}
	bw.str(`],"predicateType":`)
	bw.json(predicateType)
	bw.str(`,"predicate":`)
	bw.bytes(pred)
	bw.str("}")
	return bw.err
}

// isSHA256 is true when s is a hex SHA-256 (checked per subject, so without allocating).
func isSHA256(s string) bool {
	if len(s) != 2*32 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) bytes(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *errWriter) str(s string) { e.bytes([]byte(s)) }

func (e *errWriter) json(s string) {
	b, err := json.Marshal(s)
	if err != nil && e.err == nil {
		e.err = err
	}
	e.bytes(b)
}

// counter counts what is written through it (to nothing when w is nil).
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(p []byte) (int, error) {
	if c.w == nil {
		c.n += int64(len(p))
		return len(p), nil
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
