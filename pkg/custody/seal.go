package custody

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"strconv"

	"github.com/podcopy/podcopy/pkg/failure"
)

// Sealed is a signed custody record ready to be written: Size bytes, by WriteTo. It holds
// the statement once (the record's base64 is written as it goes), in memory, or, when sealed
// by SealSpooled with a key that signs a digest, in an unlinked file: then a record of
// 100,000 subjects costs the agent's memory nothing that grows with them. Close releases it.
type Sealed struct {
	header  string // DSSE's pre-authentication encoding's header; the statement follows it
	payload []byte // the statement, when held in memory
	file    *os.File
	size    int64  // the statement's length
	digest  []byte // the spooled statement's signed digest: SHA-256 of header and statement
	keyID   string
	sig     []byte
	// cert and stamp, for a key with a certificate: the record is a Sigstore bundle.
	cert, stamp []byte
}

// SealStream signs the in-toto statement of subjects and predicate p (of predicateType)
// with key, holding the statement in memory. subjects is read twice (once to size the
// statement) and must yield the same subjects both times.
func SealStream(ctx context.Context, key *PrivateKey, subjects iter.Seq[Subject], predicateType string, p any) (*Sealed, error) {
	return seal(ctx, key, "", false, subjects, predicateType, p)
}

// SealSpooled is SealStream for a record of many subjects: when key signs the statement's
// SHA-256 (ECDSA P-256), subjects is read once, the statement written to an unlinked file
// in dir ("" for os.TempDir()) and hashed from there, and WriteTo reads it back, checking it
// against what was signed. An ed25519 key signs the whole message, so with it the statement is held in
// memory as by SealStream. The caller closes the result.
func SealSpooled(ctx context.Context, key *PrivateKey, dir string, subjects iter.Seq[Subject], predicateType string, p any) (*Sealed, error) {
	return seal(ctx, key, dir, key.signsDigest(), subjects, predicateType, p)
}

func seal(ctx context.Context, key *PrivateKey, dir string, spooled bool, subjects iter.Seq[Subject], predicateType string, p any) (*Sealed, error) {
	pred, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	s := &Sealed{keyID: key.pub.id}
	if spooled {
		err = s.spool(dir, subjects, predicateType, pred)
		if err == nil {
			s.sig, err = key.signDigest(s.digest)
		}
	} else {
		var count counter
		if err := writeStatement(&count, subjects, predicateType, pred); err != nil {
			return nil, err
		}
		s.size = count.n
		s.header = paeHeader(s.size)
		buf := bytes.NewBuffer(make([]byte, 0, len(s.header)+int(count.n)))
		buf.WriteString(s.header)
		if err = writeStatement(buf, subjects, predicateType, pred); err == nil {
			s.payload = buf.Bytes()[len(s.header):]
			if int64(len(s.payload)) != s.size {
				err = errChanged
			}
		}
		if err == nil {
			s.sig, err = key.Sign(ctx, buf.Bytes())
		}
	}
	if err != nil {
		_ = s.Close()
		if errors.Is(err, errChanged) {
			return nil, err
		}
		return nil, fmt.Errorf("signing the custody record: %w", err)
	}
	if c := key.certifier; c != nil {
		if s.cert, err = c.Certificate(ctx); err == nil {
			s.stamp, err = c.Timestamp(ctx, s.sig)
		}
		if err != nil {
			_ = s.Close()
			return nil, failure.New(failure.Unsigned, fmt.Errorf("certifying the custody record: %w", err))
		}
	}
	return s, nil
}

var errChanged = errors.New("custody statement: its subjects changed while it was written")

// spool writes the statement once, to an unlinked file in dir, then hashes DSSE's
// pre-authentication encoding (whose header holds the statement's length) over the file.
func (s *Sealed) spool(dir string, subjects iter.Seq[Subject], predicateType string, pred []byte) error {
	f, err := os.CreateTemp(dir, "podcopy-statement-*")
	if err != nil {
		return fmt.Errorf("statement spool: %w", err)
	}
	_ = os.Remove(f.Name()) // the open handle is all it needs; nothing is left on a crash
	s.file = f
	bw := bufio.NewWriterSize(f, 64<<10)
	cw := &counter{w: bw}
	if err := writeStatement(cw, subjects, predicateType, pred); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("statement spool: %w", err)
	}
	s.size, s.header = cw.n, paeHeader(cw.n)
	h := sha256.New()
	h.Write([]byte(s.header))
	if n, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, s.size), make([]byte, 64<<10)); err != nil || n != s.size {
		return fmt.Errorf("statement spool: read %d of %d bytes: %v", n, s.size, err)
	}
	s.digest = h.Sum(nil)
	return nil
}

// paeHeader is the header of DSSE's pre-authentication encoding of a statement of n bytes.
func paeHeader(n int64) string {
	return fmt.Sprintf("DSSEv1 %d %s %d ", len(PayloadType), PayloadType, n)
}

// Close releases the spooled statement, if any.
func (s *Sealed) Close() error {
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
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
	return int64(len(s.head())) + int64(base64.StdEncoding.EncodedLen(int(s.size))) + int64(len(s.tail()))
}

// WriteTo writes the record (a DSSE envelope, as JSON).
func (s *Sealed) WriteTo(w io.Writer) (int64, error) {
	cw := &counter{w: w}
	if _, err := io.WriteString(cw, s.head()); err != nil {
		return cw.n, err
	}
	enc := base64.NewEncoder(base64.StdEncoding, cw)
	if s.file == nil {
		for rest := s.payload; len(rest) > 0; {
			k := min(len(rest), 48<<10) // a multiple of 3: whole base64 quanta
			if _, err := enc.Write(rest[:k]); err != nil {
				return cw.n, err
			}
			rest = rest[k:]
		}
	} else if err := s.copySpooled(enc); err != nil {
		return cw.n, err
	}
	if err := enc.Close(); err != nil {
		return cw.n, err
	}
	_, err := io.WriteString(cw, s.tail())
	return cw.n, err
}

// copySpooled writes the spooled statement to w, checking that it is what was signed (a
// file changed on disk must not go out under the signature).
func (s *Sealed) copySpooled(w io.Writer) error {
	h := sha256.New()
	h.Write([]byte(s.header))
	n, err := io.CopyBuffer(io.MultiWriter(h, w), io.NewSectionReader(s.file, 0, s.size), make([]byte, 48<<10))
	if err != nil {
		return fmt.Errorf("statement spool: %w", err)
	}
	if n != s.size || !bytes.Equal(h.Sum(nil), s.digest) {
		return errors.New("statement spool: the statement read back is not the one signed")
	}
	return nil
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
