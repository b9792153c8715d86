package objstore

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/goleak"
)

// chunkedPuts is an S3 endpoint that takes streamed PUTs (aws-chunked bodies with a
// trailing SHA-256) and keeps an object only when its whole body arrived and its trailer
// matches, as a real store does; everything else is a 501.
type chunkedPuts struct {
	mu      sync.Mutex
	objects map[string][]byte
	// refused counts PUTs whose body did not arrive whole or whose checksum differed.
	refused int
	// slowDownAt: after this many bytes of a body, answer 503 SlowDown (0: never).
	slowDownAt int64
}

func (c *chunkedPuts) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut || r.Header.Get("Content-Encoding") != "aws-chunked" || r.Header.Get("X-Amz-Trailer") != "x-amz-checksum-sha256" {
		http.Error(w, "not a streamed PUT", http.StatusNotImplemented)
		return
	}
	want, _ := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64)
	if c.slowDownAt > 0 {
		_, _ = io.CopyN(io.Discard, r.Body, c.slowDownAt)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>")
		return
	}
	body, sum, err := readChunked(bufio.NewReader(r.Body))
	c.mu.Lock()
	defer c.mu.Unlock()
	got := sha256.Sum256(body)
	if err != nil || int64(len(body)) != want || sum != base64.StdEncoding.EncodeToString(got[:]) {
		c.refused++
		http.Error(w, fmt.Sprintf("incomplete: %v", err), http.StatusBadRequest)
		return
	}
	c.objects[r.URL.Path] = body
	w.Header().Set("X-Amz-Version-Id", "v1")
	w.Header().Set("X-Amz-Checksum-Sha256", sum)
}

// readChunked decodes an aws-chunked body: hex size lines, chunks, then the trailer.
func readChunked(r *bufio.Reader) (body []byte, sum string, err error) {
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, "", err
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.SplitN(line, ";", 2)[0]), 16, 64)
		if err != nil {
			return nil, "", err
		}
		if n == 0 {
			break
		}
		chunk := make([]byte, n+2)
		if _, err := io.ReadFull(r, chunk); err != nil {
			return nil, "", err
		}
		body = append(body, chunk[:n]...)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, "", err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			return body, sum, nil
		}
		if v, ok := strings.CutPrefix(line, "x-amz-checksum-sha256:"); ok {
			sum = v
		}
	}
}

func streamStore(t *testing.T, h http.Handler, streamMax string) *Store {
	t.Helper()
	srv := httptest.NewTLSServer(h)
	t.Cleanup(srv.Close)
	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL), UsePathStyle: true, HTTPClient: srv.Client(),
		Credentials: aws.AnonymousCredentials{}, RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired})
	st, err := Open(c, Config{Bucket: "b", StreamMaxSize: streamMax})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// errServerAnswer: the case wants the server's own answer.
var errServerAnswer = errors.New("the server's answer")

// TestStreamedObject: an object larger than a part is one streamed PUT whose SHA-256 follows
// its bytes; fewer bytes than announced, more, or an abort mid-stream store nothing, and no
// goroutine outlives the object.
func TestStreamedObject(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"), goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
	const size = 20 << 20 // more than the 8 MiB part
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		name       string
		slowDownAt int64
		write      func(ctx context.Context, u *Upload, w io.WriteCloser) error
		want       error // nil: the object is stored
	}{
		{"whole", 0, func(_ context.Context, _ *Upload, w io.WriteCloser) error {
			for p := data; len(p) > 0; p = p[min(len(p), 100_000):] {
				if _, err := w.Write(p[:min(len(p), 100_000)]); err != nil {
					return err
				}
			}
			return w.Close()
		}, nil},
		{"fewer bytes", 0, func(_ context.Context, _ *Upload, w io.WriteCloser) error {
			if _, err := w.Write(data[:size-1]); err != nil {
				return err
			}
			return w.Close()
		}, errors.New("bytes written")},
		{"more bytes", 0, func(_ context.Context, u *Upload, w io.WriteCloser) error {
			if _, err := w.Write(data); err != nil {
				return err
			}
			_, err := w.Write([]byte{1})
			u.Cancel(context.Background(), w)
			return err
		}, errMoreBytes},
		{"aborted", 0, func(ctx context.Context, u *Upload, w io.WriteCloser) error {
			if _, err := w.Write(data[:size/2]); err != nil {
				return err
			}
			u.Abort(ctx)
			_, err := w.Write(data[size/2:])
			return err
		}, errAborted},
		// The server's own answer, not the SDK's "failed to rewind" of a retry it cannot make.
		{"refused mid-stream", 1 << 20, func(_ context.Context, _ *Upload, w io.WriteCloser) error {
			_, err := w.Write(data)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
			return err
		}, errServerAnswer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := &chunkedPuts{objects: map[string][]byte{}, slowDownAt: tc.slowDownAt}
			st := streamStore(t, srv, "")
			up := st.Begin(nil, 4)
			w, err := up.Create(t.Context(), "k", size)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.write(t.Context(), up, w)
			srv.mu.Lock()
			defer srv.mu.Unlock()
			got, stored := srv.objects["/b/k"]
			switch {
			case tc.want == nil:
				if err != nil || !stored || string(got) != string(data) || up.Version("k") != "v1" {
					t.Fatalf("err %v, stored %v (%d bytes), version %q", err, stored, len(got), up.Version("k"))
				}
			case err == nil || stored:
				t.Fatalf("err %v, stored %v: want %v and nothing stored", err, stored, tc.want)
			case tc.want == errServerAnswer:
				// The 503 or the reset of the connection it closed, whichever the client saw first.
				if strings.Contains(err.Error(), "rewind") || (!strings.Contains(err.Error(), "SlowDown") && !strings.Contains(err.Error(), "reset")) {
					t.Fatalf("err %v, want the server's answer", err)
				}
			case !errors.Is(err, tc.want) && !strings.Contains(err.Error(), tc.want.Error()):
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			var e *Error
			if err != nil && !errors.As(err, &e) {
				t.Errorf("%v is not a destination failure", err)
			}
		})
	}
}

// TestStreamMaxSize: streamMaxSize "0" (or an http endpoint) keeps multipart uploads; the
// setting is checked.
func TestStreamMaxSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{{"", MaxPutSize, false}, {"0", 0, false}, {"1Gi", 1 << 30, false}, {"6Gi", 0, true}, {"-1", 0, true}, {"lots", 0, true}} {
		got, err := Config{Bucket: "b", StreamMaxSize: tc.in}.streamMaxSize()
		if (err != nil) != tc.bad || (!tc.bad && got != tc.want) {
			t.Errorf("%q: %d %v", tc.in, got, err)
		}
		if verr := (Config{Bucket: "b", StreamMaxSize: tc.in}).Validate(); (verr != nil) != tc.bad {
			t.Errorf("%q: Validate %v", tc.in, verr)
		}
	}
	c := s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String("http://127.0.0.1:1"), UsePathStyle: true})
	st, err := Open(c, Config{Bucket: "b"})
	if err != nil || st.streamMax != 0 {
		t.Fatalf("http endpoint: streamMax %d, %v", st.streamMax, err)
	}
}
