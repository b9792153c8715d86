// Package objstore writes collections to an S3-compatible bucket (SPEC §9, destination.s3):
// every object streamed with its SHA-256 as the S3 checksum (the server refuses a part
// whose bytes differ), in parts of a fixed size so memory never grows with a file, under
// Object Lock retention and legal hold when configured.
//
// The client is the AWS SDK for Go v2 (aws-sdk-go-v2/service/s3): maintained by AWS,
// the reference for the checksum and Object Lock headers this needs, and the one that
// reads the usual AWS environment variables, profiles and roles for the plugin's users.
package objstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/podcopy/podcopy/pkg/failure"
)

// Lock is destination.s3.objectLock.
type Lock struct {
	// Mode is GOVERNANCE or COMPLIANCE ("": no retention).
	Mode string `mapstructure:"mode"`
	// Days is how long every object of a collection is retained from the collection's start.
	Days int `mapstructure:"days"`
	// LegalHold puts a legal hold on every object as well.
	LegalHold bool `mapstructure:"legalHold"`
}

// Config is destination.s3.
type Config struct {
	// Endpoint is the S3 endpoint URL (https://...); "" is AWS's for Region.
	Endpoint string `mapstructure:"endpoint"`
	Bucket   string `mapstructure:"bucket"`
	Region   string `mapstructure:"region"`
	// CAFile is a PEM bundle that verifies the endpoint's certificate (besides the system's).
	CAFile string `mapstructure:"caFile"`
	// PartSize is the size of each uploaded part (a quantity, at least 5Mi; default 8Mi): the
	// memory one collection in flight holds for the bucket.
	PartSize string `mapstructure:"partSize"`
	// StreamMaxSize: a file larger than one part and at most this size (a quantity; default
	// and largest 5Gi, S3's largest PUT; "0": none) is one PUT streamed as it is read, with
	// the whole object's SHA-256 as its checksum sent after its bytes (an aws-chunked
	// trailer), instead of a multipart upload: no part buffers, and the S3 server neither
	// hashes parts nor joins them. Needs an https endpoint (the trailer is not sent over
	// http); a server without trailing checksums needs "0".
	StreamMaxSize string `mapstructure:"streamMaxSize"`
	ObjectLock    Lock   `mapstructure:"objectLock"`
	// CreateBucket creates the bucket at start when it does not exist (with Object Lock
	// enabled when ObjectLock is set): for demos; production buckets are made by their owners.
	CreateBucket bool `mapstructure:"createBucket"`
	// Bundles packs small collected files into tar objects.
	Bundles Bundles `mapstructure:"bundles"`
}

// Bundles is destination.s3.bundles: which collected files are packed into bundle objects
// (tar, each member placed by offset in the manifest and the custody record), and how
// large a bundle grows. One signed PUT per small file costs far more than its bytes.
type Bundles struct {
	// MemberMaxSize: files of at most this size are packed (a quantity; default 512Ki; "0":
	// none are, every file is an object of its own).
	MemberMaxSize string `mapstructure:"memberMaxSize"`
	// MaxSize: a bundle is stored once the next member would take it past this size
	// (default 4Mi, at most 64Mi).
	MaxSize string `mapstructure:"maxSize"`
	// MaxMembers: a bundle is stored once it holds this many files (default 4096).
	MaxMembers int `mapstructure:"maxMembers"`
}

// Sizes are the bundles' limits in bytes and members, defaults applied.
func (b Bundles) Sizes() (memberMax, maxSize int64, maxMembers int, err error) {
	quantity := func(key, v string, def, lo, hi int64) (int64, error) {
		if v == "" {
			return def, nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return 0, fmt.Errorf("destination.s3.bundles.%s: %w", key, err)
		}
		if q.Value() < lo || q.Value() > hi {
			return 0, fmt.Errorf("destination.s3.bundles.%s %s: between %d and %d bytes", key, v, lo, hi)
		}
		return q.Value(), nil
	}
	if memberMax, err = quantity("memberMaxSize", b.MemberMaxSize, 512<<10, 0, 16<<20); err != nil {
		return 0, 0, 0, err
	}
	if maxSize, err = quantity("maxSize", b.MaxSize, 4<<20, 1<<20, 64<<20); err != nil {
		return 0, 0, 0, err
	}
	if memberMax > maxSize {
		return 0, 0, 0, fmt.Errorf("destination.s3.bundles.memberMaxSize %d is larger than maxSize %d", memberMax, maxSize)
	}
	maxMembers = b.MaxMembers
	switch {
	case maxMembers == 0:
		maxMembers = 4096
	case maxMembers < 1 || maxMembers > 100000:
		return 0, 0, 0, fmt.Errorf("destination.s3.bundles.maxMembers %d: between 1 and 100000", maxMembers)
	}
	return memberMax, maxSize, maxMembers, nil
}

// Enabled reports whether a bucket is configured.
func (c Config) Enabled() bool { return c.Bucket != "" }

// MinPartSize is S3's smallest part but the last.
const MinPartSize = 5 << 20

// Validate checks the configuration before anything starts.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	var errs []error
	if _, err := c.partSize(); err != nil {
		errs = append(errs, err)
	}
	if _, err := c.streamMaxSize(); err != nil {
		errs = append(errs, err)
	}
	if _, _, _, err := c.Bundles.Sizes(); err != nil {
		errs = append(errs, err)
	}
	switch c.ObjectLock.Mode {
	case "":
		if c.ObjectLock.Days != 0 {
			errs = append(errs, errors.New("destination.s3.objectLock.days needs a mode (GOVERNANCE or COMPLIANCE)"))
		}
	case string(types.ObjectLockModeGovernance), string(types.ObjectLockModeCompliance):
		if c.ObjectLock.Days < 1 {
			errs = append(errs, fmt.Errorf("destination.s3.objectLock.days must be at least 1 with mode %s", c.ObjectLock.Mode))
		}
	default:
		errs = append(errs, fmt.Errorf("destination.s3.objectLock.mode %q is unknown; use GOVERNANCE or COMPLIANCE", c.ObjectLock.Mode))
	}
	if c.Endpoint != "" && !strings.HasPrefix(c.Endpoint, "https://") && !strings.HasPrefix(c.Endpoint, "http://") {
		errs = append(errs, fmt.Errorf("destination.s3.endpoint %q is not an http(s) URL", c.Endpoint))
	}
	if c.CAFile != "" {
		if _, err := os.ReadFile(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("destination.s3.caFile: %w", err))
		}
	}
	return errors.Join(errs...)
}

func (c Config) partSize() (int64, error) {
	if c.PartSize == "" {
		return 8 << 20, nil
	}
	q, err := resource.ParseQuantity(c.PartSize)
	if err != nil {
		return 0, fmt.Errorf("destination.s3.partSize: %w", err)
	}
	if q.Value() < MinPartSize || q.Value() > 512<<20 {
		return 0, fmt.Errorf("destination.s3.partSize %s: between 5Mi and 512Mi", c.PartSize)
	}
	return q.Value(), nil
}

// MaxPutSize is S3's largest object written in one PUT.
const MaxPutSize = 5 << 30

func (c Config) streamMaxSize() (int64, error) {
	if c.StreamMaxSize == "" {
		return MaxPutSize, nil
	}
	q, err := resource.ParseQuantity(c.StreamMaxSize)
	if err != nil {
		return 0, fmt.Errorf("destination.s3.streamMaxSize: %w", err)
	}
	if q.Value() < 0 || q.Value() > MaxPutSize {
		return 0, fmt.Errorf("destination.s3.streamMaxSize %s: between 0 and 5Gi", c.StreamMaxSize)
	}
	return q.Value(), nil
}

// Store is a bucket collections are written to.
type Store struct {
	Client   *s3.Client
	Bucket   string
	Lock     Lock
	partSize int64
	// streamMax is the largest object streamed in one PUT (0: none).
	streamMax int64
	bufs      partBuffers
}

// partBuffers is a free list of part buffers: at most one collection's worth (PartsInFlight
// filling and uploading, one filling) stays allocated between uses. A sync.Pool would be
// emptied by every GC, and each part would then cost a fresh 8 MiB allocation, growing the
// heap with garbage at the rate bytes are uploaded.
type partBuffers struct {
	size int64
	free chan *[]byte
}

func (p *partBuffers) get() *[]byte {
	select {
	case b := <-p.free:
		*b = (*b)[:0]
		return b
	default:
		b := make([]byte, 0, p.size)
		return &b
	}
}

func (p *partBuffers) put(b *[]byte) {
	if int64(cap(*b)) != p.size { // a small object's own buffer
		return
	}
	select {
	case p.free <- b:
	default: // enough are kept: this one goes
	}
}

// New connects to the bucket of cfg with the default AWS credential chain (environment,
// shared profiles, web identity).
func New(ctx context.Context, cfg Config) (*Store, error) {
	client, err := NewClient(ctx, cfg.Endpoint, cfg.Region, cfg.CAFile)
	if err != nil {
		return nil, err
	}
	return Open(client, cfg)
}

// Open is the bucket of cfg through client (New's, or one made with ClientOptions).
func Open(client *s3.Client, cfg Config) (*Store, error) {
	ps, err := cfg.partSize()
	if err != nil {
		return nil, err
	}
	sm, err := cfg.streamMaxSize()
	if err != nil {
		return nil, err
	}
	if strings.HasPrefix(aws.ToString(client.Options().BaseEndpoint), "http://") {
		sm = 0 // a trailing checksum needs TLS
	}
	s := &Store{Client: client, Bucket: cfg.Bucket, Lock: cfg.ObjectLock, partSize: ps, streamMax: sm}
	s.bufs = partBuffers{size: ps, free: make(chan *[]byte, PartsInFlight+1)}
	return s, nil
}

// ClientOptions say how to reach an S3 endpoint.
type ClientOptions struct {
	// Endpoint is the URL ("" for AWS), Region its region (default us-east-1).
	Endpoint, Region string
	// CA is a PEM bundle trusted besides the system's certificates.
	CA []byte
	// AccessKeyID and SecretAccessKey, when set, are the credentials; else the default AWS
	// chain (environment, shared profiles, web identity) supplies them.
	AccessKeyID, SecretAccessKey string
}

// NewClient is an S3 client for endpoint ("" for AWS) in region, trusting caFile's
// certificates as well as the system's, with the default AWS credential chain.
func NewClient(ctx context.Context, endpoint, region, caFile string) (*s3.Client, error) {
	o := ClientOptions{Endpoint: endpoint, Region: region}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		o.CA = pem
	}
	return o.Client(ctx)
}

// Client is an S3 client with these options; it uses path-style addressing on a custom
// endpoint.
func (c ClientOptions) Client(ctx context.Context) (*s3.Client, error) {
	region := c.Region
	if region == "" {
		region = "us-east-1"
	}
	opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRegion(region)}
	if len(c.CA) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(c.CA) {
			return nil, errors.New("the CA bundle holds no PEM certificate")
		}
		hc := awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		})
		opts = append(opts, awsconfig.WithHTTPClient(hc))
	}
	if c.AccessKeyID != "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, err
	}
	return s3.NewFromConfig(ac, func(o *s3.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
			o.UsePathStyle = true
		}
		// Checksums are the ones podcopy computes (SHA-256 of what it hashed), sent as
		// headers; not ones the SDK would compute again in a trailer.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}

// EnsureBucket creates the bucket when it does not exist, with Object Lock enabled when the
// store locks objects (destination.s3.createBucket).
func (s *Store) EnsureBucket(ctx context.Context) error {
	_, err := s.Client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.Bucket)})
	if err == nil {
		return nil
	}
	in := &s3.CreateBucketInput{Bucket: aws.String(s.Bucket), ObjectLockEnabledForBucket: aws.Bool(s.Lock.Mode != "")}
	if _, err := s.Client.CreateBucket(ctx, in); err != nil {
		var owned *types.BucketAlreadyOwnedByYou
		if !errors.As(err, &owned) {
			return fmt.Errorf("creating bucket %s: %w", s.Bucket, err)
		}
	}
	return nil
}

// Retention is the lock every object of a collection started at start gets.
type Retention struct {
	Mode        string
	RetainUntil time.Time
	LegalHold   bool
}

// RetentionFor is the retention of a collection started at start (nil: no lock).
func (s *Store) RetentionFor(start time.Time) *Retention {
	if s.Lock.Mode == "" && !s.Lock.LegalHold {
		return nil
	}
	r := &Retention{Mode: s.Lock.Mode, LegalHold: s.Lock.LegalHold}
	if s.Lock.Mode != "" {
		r.RetainUntil = start.UTC().Add(time.Duration(s.Lock.Days) * 24 * time.Hour).Truncate(time.Second)
	}
	return r
}

// Upload is one collection's objects.
type Upload struct {
	s         *Store
	retention *Retention
	mu        sync.Mutex
	open      map[*object]struct{}
	// Parallel lets up to this many small objects (one part or less, at most
	// asyncMaxBytes) be written while the next ones stream, so ten thousand small files do not
	// hold the source's stream for ten thousand round trips (0: every Close waits). Wait
	// joins them.
	Parallel int
	sem      chan struct{}
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error
	// versions are the version ids the store gave each object written (a store with
	// versioning: a custody record names them, and readers read exactly those).
	versions map[string]string
}

// setVersion remembers the version id the store gave key.
func (u *Upload) setVersion(key string, v *string) {
	if aws.ToString(v) == "" || aws.ToString(v) == "null" {
		return
	}
	u.errMu.Lock()
	defer u.errMu.Unlock()
	if u.versions == nil {
		u.versions = map[string]string{}
	}
	u.versions[key] = aws.ToString(v)
}

// Version is the version id of key, an object this upload completed ("" when the store
// gave none: no versioning). Call it after Wait.
func (u *Upload) Version(key string) string {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	return u.versions[key]
}

// asyncMaxBytes is the largest object Close may leave in flight (copied out of the part
// buffer: memory per collection stays within Parallel × asyncMaxBytes).
const asyncMaxBytes = 1 << 20

// failed is the first error of an object left in flight.
func (u *Upload) failed() error {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	return u.err
}

func (u *Upload) fail(err error) {
	u.errMu.Lock()
	defer u.errMu.Unlock()
	if u.err == nil {
		u.err = err
	}
}

// Wait waits for the objects left in flight and returns the first of their errors.
func (u *Upload) Wait(context.Context) error {
	u.wg.Wait()
	return u.failed()
}

// Begin starts writing a collection whose objects are locked by r (nil: not locked);
// parallel is Upload.Parallel.
func (s *Store) Begin(r *Retention, parallel int) *Upload {
	return &Upload{s: s, retention: r, open: map[*object]struct{}{}, Parallel: parallel, sem: make(chan struct{}, max(parallel, 1))}
}

// Error is a failure of the bucket: reason DestinationFailed, retried like the analysis
// pod's failures.
type Error struct{ Err error }

func (e *Error) Error() string { return "writing to the bucket: " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// FailureReason implements failure.Reasoned.
func (e *Error) FailureReason() string { return failure.DestinationFailed }

func b64(sum []byte) *string { return aws.String(base64.StdEncoding.EncodeToString(sum)) }

// Create starts the object key of size bytes (-1: not known in advance): write its bytes,
// then Close to complete it.
// Objects up to the part size are one PUT with their SHA-256; larger ones up to the
// store's streamMaxSize are one PUT streamed as they are written, with their SHA-256 sent
// after their bytes; larger ones and those of unknown size are multipart uploads, each part
// with its own SHA-256. An object is visible only once Close returns.
func (u *Upload) Create(ctx context.Context, key string, size int64) (io.WriteCloser, error) {
	if err := u.failed(); err != nil {
		return nil, err
	}
	o := &object{ctx: ctx, u: u, key: key, size: size}
	if size > u.s.partSize && size <= u.s.streamMax {
		o.stream()
	} else if size >= 0 && size <= asyncMaxBytes { // a small object (a record): a buffer of its size
		b := make([]byte, 0, size)
		o.buf = &b
	} else {
		o.buf = u.s.bufs.get()
	}
	u.mu.Lock()
	u.open[o] = struct{}{}
	u.mu.Unlock()
	return o, nil
}

// Cancel abandons w, an object from Create that will not be completed (its source failed):
// its multipart upload, if any, is aborted.
func (u *Upload) Cancel(ctx context.Context, w io.WriteCloser) {
	if o, ok := w.(*object); ok {
		o.abort(ctx)
		o.release()
	}
}

// Put writes an object whole from data (a record, a bundle) whose SHA-256 is sum, under the
// collection's lock: one PUT, from data itself, when it fits in a part (the caller's sum is
// its checksum: the bytes are not hashed twice).
func (u *Upload) Put(ctx context.Context, key string, data []byte, sum [sha256.Size]byte) error {
	if err := u.failed(); err != nil {
		return err
	}
	if int64(len(data)) <= u.s.partSize {
		return (&object{ctx: ctx, u: u, key: key}).putSum(data, sum)
	}
	w, err := u.Create(ctx, key, int64(len(data)))
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		u.Cancel(ctx, w)
		return err
	}
	return w.Close()
}

// Abort aborts every multipart upload of this collection still open. Objects already
// complete stay (a locked one cannot be removed); without the collection's manifest and
// record, readers treat them as absent, and the janitor aborts what this could not.
func (u *Upload) Abort(ctx context.Context) {
	u.wg.Wait() // objects in flight end (their context is the collection's)
	u.mu.Lock()
	defer u.mu.Unlock()
	for o := range u.open {
		o.abort(ctx)
	}
}

// errAborted ends a streamed object's PUT that will not be completed.
var errAborted = errors.New("upload aborted")

// PartsInFlight is how many parts of a large object (more than parallelMinParts parts)
// upload while the next one fills: reading the source never waits on one part's round
// trip, and memory per object is at most (PartsInFlight+1) parts (24 MiB at the default
// 8 MiB part size).
const PartsInFlight = 2

type object struct {
	ctx     context.Context
	u       *Upload
	key     string
	size, n int64
	buf     *[]byte
	// A streamed object (stream): its bytes go through pw to the PUT in flight, which
	// cancel ends; its failure is err.
	pw       *io.PipeWriter
	cancel   context.CancelCauseFunc
	uploadID string
	done     bool
	// Parts in flight: each its own goroutine, joined by wait; parts are kept by number.
	inflight chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	parts    []types.CompletedPart
	err      error
}

// stream starts the object's PUT, reading its body from the pipe Write writes to; the PUT
// is the object's one goroutine, joined by Close or abort.
func (o *object) stream() {
	s := o.u.s
	ctx, cancel := context.WithCancelCause(o.ctx)
	pr, pw := io.Pipe()
	o.pw, o.cancel = pw, cancel
	mode, until, hold := o.lockInput()
	in := &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(o.key), Body: pipeBody{pr}, ContentLength: aws.Int64(o.size),
		ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ObjectLockMode: mode, ObjectLockRetainUntilDate: until, ObjectLockLegalHoldStatus: hold}
	o.wg.Go(func() {
		// No SDK retry: the body cannot be sent twice, and its "failed to rewind" would hide
		// why the attempt failed; the collection is retried instead.
		out, err := s.Client.PutObject(ctx, in, func(o *s3.Options) { o.Retryer = aws.NopRetryer{} })
		if err != nil {
			err = &Error{Err: fmt.Errorf("%s: %w", o.key, err)}
			o.failWith(err)
			pr.CloseWithError(err) // a Write waiting on the pipe returns it
			return
		}
		o.u.setVersion(o.key, out.VersionId)
	})
}

// pipeBody hides everything but Read from the SDK: without Seek the body is streamed once
// with a trailing checksum; without Close the HTTP transport cannot close the pipe under a
// Write before the PUT's own failure is kept (the Write would say only "closed pipe").
type pipeBody struct{ r io.Reader }

func (b pipeBody) Read(p []byte) (int, error) { return b.r.Read(p) }

// errMoreBytes: a streamed object was given more bytes than announced.
var errMoreBytes = errors.New("more bytes written than announced")

func (o *object) Write(p []byte) (int, error) {
	if o.pw != nil {
		if o.n+int64(len(p)) > o.size {
			return 0, &Error{Err: fmt.Errorf("%s: %w (%d)", o.key, errMoreBytes, o.size)}
		}
		n, err := o.pw.Write(p)
		o.n += int64(n)
		if err != nil {
			if failed := o.partsFailed(); failed != nil {
				err = failed // the PUT's failure, or the abort
			} else {
				err = &Error{Err: fmt.Errorf("%s: %w", o.key, err)}
			}
		}
		return n, err
	}
	written := 0
	for len(p) > 0 {
		room := int(o.u.s.partSize) - len(*o.buf)
		k := min(room, len(p))
		*o.buf = append(*o.buf, p[:k]...)
		p, written = p[k:], written+k
		o.n += int64(k)
		if len(*o.buf) == int(o.u.s.partSize) && (o.size < 0 || o.n < o.size) {
			if err := o.flushPart(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (o *object) lockInput() (types.ObjectLockMode, *time.Time, types.ObjectLockLegalHoldStatus) {
	r := o.u.retention
	if r == nil {
		return "", nil, ""
	}
	var until *time.Time
	if r.Mode != "" {
		until = aws.Time(r.RetainUntil)
	}
	hold := types.ObjectLockLegalHoldStatus("")
	if r.LegalHold {
		hold = types.ObjectLockLegalHoldStatusOn
	}
	return types.ObjectLockMode(r.Mode), until, hold
}

// flushPart sends the part buffer as the next part, in a goroutine of its own once fewer
// than PartsInFlight are uploading, and takes a fresh buffer for the next part.
func (o *object) flushPart() error {
	s := o.u.s
	if o.uploadID == "" {
		mode, until, hold := o.lockInput()
		out, err := s.Client.CreateMultipartUpload(o.ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(s.Bucket), Key: aws.String(o.key),
			ChecksumAlgorithm: types.ChecksumAlgorithmSha256, ObjectLockMode: mode, ObjectLockRetainUntilDate: until, ObjectLockLegalHoldStatus: hold})
		if err != nil {
			return &Error{Err: fmt.Errorf("%s: %w", o.key, err)}
		}
		o.uploadID = aws.ToString(out.UploadId)
		o.inflight = make(chan struct{}, PartsInFlight)
	}
	if err := o.partsFailed(); err != nil {
		return err
	}
	num := o.nextPart()
	if o.size >= 0 && o.size <= parallelMinParts*s.partSize {
		// A few parts (a manifest, a record, a file of tens of MiB): one at a time from one
		// buffer; a large file's parts overlap the reading of the next.
		err := o.uploadPart(num, *o.buf)
		*o.buf = (*o.buf)[:0]
		return err
	}
	select {
	case o.inflight <- struct{}{}:
	case <-o.ctx.Done():
		return context.Cause(o.ctx)
	}
	data := o.buf
	o.buf = s.bufs.get()
	o.wg.Go(func() {
		defer func() { s.bufs.put(data); <-o.inflight }()
		_ = o.uploadPart(num, *data) // its failure is kept for the next part and Close
	})
	return nil
}

// parallelMinParts: an object of more parts than this (or of unknown size) uploads
// PartsInFlight parts at once; a smaller one, one at a time from a single buffer.
const parallelMinParts = 8

// nextPart numbers the next part and keeps its place.
func (o *object) nextPart() int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.parts = append(o.parts, types.CompletedPart{})
	return int32(len(o.parts))
}

// uploadPart sends data as part num with its SHA-256 as the checksum; a failure is also kept
// as the object's (partsFailed).
func (o *object) uploadPart(num int32, data []byte) error {
	s := o.u.s
	sum := sha256.Sum256(data)
	out, err := s.Client.UploadPart(o.ctx, &s3.UploadPartInput{Bucket: aws.String(s.Bucket), Key: aws.String(o.key), UploadId: aws.String(o.uploadID),
		PartNumber: aws.Int32(num), Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ChecksumSHA256: b64(sum[:])})
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		err = &Error{Err: fmt.Errorf("%s part %d: %w", o.key, num, err)}
		if o.err == nil {
			o.err = err
		}
		return err
	}
	o.parts[num-1] = types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num), ChecksumSHA256: out.ChecksumSHA256}
	return nil
}

// failWith keeps err as the object's failure unless one is kept already.
func (o *object) failWith(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

// partsFailed is the first failure of a part in flight.
func (o *object) partsFailed() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}

// waitParts waits for the parts in flight and returns the first of their failures.
func (o *object) waitParts() error {
	o.wg.Wait()
	return o.partsFailed()
}

// Close completes the object; it fails when fewer or more bytes than size were written.
func (o *object) Close() error {
	defer o.release()
	if o.size >= 0 && o.n != o.size {
		o.abort(context.WithoutCancel(o.ctx))
		return &Error{Err: fmt.Errorf("%s: %d bytes written, %d announced", o.key, o.n, o.size)}
	}
	if o.pw != nil {
		_ = o.pw.Close() // the PUT reads the end of its body, sends the checksum and returns
		if err := o.waitParts(); err != nil {
			return err
		}
		o.done = true
		return nil
	}
	s := o.u.s
	if o.uploadID == "" {
		u := o.u
		if u.Parallel > 0 && len(*o.buf) <= asyncMaxBytes {
			data := *o.buf
			if int64(cap(data)) == u.s.partSize { // a part buffer goes back to the list: copy out
				data = bytes.Clone(data)
			} else {
				o.buf = nil // its own buffer: handed to the PUT
			}
			select {
			case u.sem <- struct{}{}:
			case <-o.ctx.Done():
				return context.Cause(o.ctx)
			}
			if err := u.failed(); err != nil {
				<-u.sem
				return err
			}
			o.done = true
			u.wg.Go(func() {
				defer func() { <-u.sem }()
				if err := o.put(data); err != nil {
					u.fail(err)
				}
			})
			return nil
		}
		if err := o.put(*o.buf); err != nil {
			return err
		}
		o.done = true
		return nil
	}
	if len(*o.buf) > 0 {
		if err := o.flushPart(); err != nil {
			o.abort(context.WithoutCancel(o.ctx))
			return err
		}
	}
	if err := o.waitParts(); err != nil {
		o.abort(context.WithoutCancel(o.ctx))
		return err
	}
	out, err := s.Client.CompleteMultipartUpload(o.ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(s.Bucket), Key: aws.String(o.key),
		UploadId: aws.String(o.uploadID), MultipartUpload: &types.CompletedMultipartUpload{Parts: o.parts}})
	if err != nil {
		o.abort(context.WithoutCancel(o.ctx))
		return &Error{Err: fmt.Errorf("%s: completing the upload: %w", o.key, err)}
	}
	o.u.setVersion(o.key, out.VersionId)
	o.done = true
	return nil
}

// put writes the object in one PUT with its SHA-256 as the checksum.
func (o *object) put(data []byte) error { return o.putSum(data, sha256.Sum256(data)) }

// putSum is put of data whose SHA-256 is sum.
func (o *object) putSum(data []byte, sum [sha256.Size]byte) error {
	s := o.u.s
	mode, until, hold := o.lockInput()
	out, err := s.Client.PutObject(o.ctx, &s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String(o.key),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))), ChecksumSHA256: b64(sum[:]),
		ObjectLockMode: mode, ObjectLockRetainUntilDate: until, ObjectLockLegalHoldStatus: hold})
	if err != nil {
		return &Error{Err: fmt.Errorf("%s: %w", o.key, err)}
	}
	o.u.setVersion(o.key, out.VersionId)
	return nil
}

// abort aborts the object's multipart upload, if any, retrying for up to a minute: the
// failure that ends a collection is often the store going away, and it comes back. What
// this cannot abort the janitor does (Store.AbortStale).
func (o *object) abort(ctx context.Context) {
	if o.pw != nil { // a streamed PUT ends without its body's end: the server stores nothing
		o.failWith(&Error{Err: fmt.Errorf("%s: %w", o.key, errAborted)})
		o.cancel(errAborted)
		o.pw.CloseWithError(errAborted)
		o.wg.Wait()
		return
	}
	o.wg.Wait() // the parts in flight end first (their context is the collection's)
	if o.done || o.uploadID == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	delay := 500 * time.Millisecond
	for {
		actx, acancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := o.u.s.Client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{Bucket: aws.String(o.u.s.Bucket), Key: aws.String(o.key), UploadId: aws.String(o.uploadID)})
		acancel()
		var gone *types.NoSuchUpload
		if err == nil || errors.As(err, &gone) {
			o.done = true
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, 8*time.Second)
	}
}

func (o *object) release() {
	o.wg.Wait() // parts in flight return their buffers
	if o.cancel != nil {
		o.cancel(nil)
	}
	o.u.mu.Lock()
	delete(o.u.open, o)
	o.u.mu.Unlock()
	if o.buf != nil {
		o.u.s.bufs.put(o.buf)
		o.buf = nil
	}
}

// Copy makes dst a copy of src, an object of this collection written before (a hard link in
// the source), under the same lock.
func (u *Upload) Copy(ctx context.Context, dst, src string) error {
	if err := u.Wait(ctx); err != nil { // src may be in flight
		return err
	}
	o := &object{u: u}
	mode, until, hold := o.lockInput()
	out, err := u.s.Client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(u.s.Bucket), Key: aws.String(dst),
		CopySource: aws.String(u.s.Bucket + "/" + escapeKey(src)), ChecksumAlgorithm: types.ChecksumAlgorithmSha256,
		ObjectLockMode: mode, ObjectLockRetainUntilDate: until, ObjectLockLegalHoldStatus: hold})
	if err != nil {
		return &Error{Err: fmt.Errorf("copying %s to %s: %w", src, dst, err)}
	}
	u.setVersion(dst, out.VersionId)
	return nil
}

// escapeKey URL-escapes each segment of a key for x-amz-copy-source.
func escapeKey(key string) string {
	parts := strings.Split(key, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// AbortStale aborts every multipart upload of the bucket started before before, and says
// how many it aborted.
func (s *Store) AbortStale(ctx context.Context, before time.Time) (int, error) {
	n := 0
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.Bucket)}
	for {
		out, err := s.Client.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, err
		}
		for _, u := range out.Uploads {
			if u.Initiated == nil || !u.Initiated.Before(before) {
				continue
			}
			if _, err := s.Client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.Bucket), Key: u.Key, UploadId: u.UploadId}); err != nil {
				return n, fmt.Errorf("aborting the upload of %s: %w", aws.ToString(u.Key), err)
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}
