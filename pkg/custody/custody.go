// Package custody is a collection's signed custody record (SPEC §9): an in-toto Statement
// whose subjects are every file of the collection with its SHA-256 (and manifest.json),
// whose predicate says where the files came from, who asked and when, in a DSSE envelope
// signed by the agent's key. Anyone with the published public keys verifies it offline.
//
// The envelope (DSSE) and the statement (in-toto attestation v1) come from their reference
// libraries, go-securesystemslib/dsse and in-toto/attestation/go/v1; this package only
// supplies the keys and the predicate.
package custody

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	ita1 "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
)

const (
	// FileName is the custody record's name, beside manifest.json in a collection.
	FileName = layout.CustodyName
	// PayloadType is the DSSE payload type of an in-toto Statement.
	PayloadType = "application/vnd.in-toto+json"
	// PredicateType names podcopy's predicate.
	PredicateType = "https://podcopy.dev/custody/v1"
	// ManifestSubject is the subject name of the collection's manifest.json.
	ManifestSubject = layout.ManifestName
	// MaxRecordBytes bounds what a reader accepts as a custody record.
	MaxRecordBytes = 64 << 20
)

// Subject is one signed file: its name relative to the collection directory
// ("<container>/<path>", or "manifest.json") and its hex SHA-256.
type Subject struct {
	Name   string
	SHA256 string
	// VersionID is the bucket object's version id the agent wrote ("" for an analysis pod, or
	// a bucket without versioning). Readers of a bucket read exactly that version.
	VersionID string
	// Bundle is the bundle object that holds the file in a bucket (a name relative to the
	// collection), Offset where its Size bytes start in it; "" for a file stored alone.
	Bundle       string
	Offset, Size int64
}

// Member is where a bundled file's bytes are: Size bytes from Offset in object Bundle.
type Member struct {
	Bundle       string
	Offset, Size int64
}

// Subject annotations: the bucket object's version id, and a bundled file's place.
const (
	VersionAnnotation      = "s3VersionId"
	BundleAnnotation       = "podcopyBundle"
	BundleOffsetAnnotation = "podcopyBundleOffset"
	BundleSizeAnnotation   = "podcopyBundleSize"
)

// FileSubject is the subject name of a collected file: the file's source path below its
// container's directory, as the layout writes it.
func FileSubject(container, sourcePath string) string {
	return container + "/" + strings.TrimPrefix(sourcePath, "/")
}

// Pod identifies the source pod.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	UID       string `json:"uid"`
}

// Container identifies the source container and what it ran.
type Container struct {
	Name        string `json:"name"`
	ID          string `json:"id,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageDigest string `json:"imageDigest,omitempty"`
}

// Predicate is podcopy's custody predicate.
type Predicate struct {
	Collection    string           `json:"collection"`
	Pod           Pod              `json:"pod"`
	Node          string           `json:"node"`
	Container     Container        `json:"container"`
	Request       manifest.Request `json:"request"`
	RequestedBy   string           `json:"requestedBy,omitempty"`
	RequestOrigin string           `json:"requestOrigin,omitempty"`
	// SourceKind is how the files were read: "tar" (the container's own tar) or "helper"
	// (podcopy's helper beside the container).
	SourceKind  string          `json:"sourceKind"`
	Agent       manifest.Agent  `json:"agent"`
	Destination string          `json:"destination"`
	StartTime   string          `json:"startTime"`
	EndTime     string          `json:"endTime"`
	Totals      manifest.Totals `json:"totals"`
	// Retention is the bucket's Object Lock on every object (absent for an analysis pod,
	// which holds no lock).
	Retention *manifest.Retention `json:"retention,omitempty"`
	// Alert is the alert the collection answers (set by the alert receiver).
	Alert *manifest.Alert `json:"alert,omitempty"`
	// Occasion is what started a deferred request (podcopy/collect-on).
	Occasion string `json:"occasion,omitempty"`
}

// PredicateFor is the predicate of a collection described by a manifest header, its
// totals and its source kind.
func PredicateFor(h manifest.Header, totals manifest.Totals, sourceKind string) Predicate {
	return Predicate{
		Collection: h.Collection,
		Pod:        Pod{Namespace: h.Source.Namespace, Name: h.Source.Pod, UID: h.Source.UID},
		Node:       h.Source.Node,
		Container: Container{Name: h.Source.Container, ID: h.Source.ContainerID, Image: h.Source.Image,
			ImageDigest: ImageDigest(h.Source.ImageID)},
		Request: h.Request, RequestedBy: h.RequestedBy, RequestOrigin: h.RequestOrigin,
		SourceKind:  sourceKind,
		Agent:       h.Agent,
		Destination: destination(h.Destination),
		StartTime:   h.StartTime, EndTime: h.CompletionTime,
		Totals: totals, Retention: h.Destination.Retention,
		Alert: h.Alert, Occasion: h.Occasion,
	}
}

// destination names where a collection was written: the analysis pod's directory, the
// bucket's prefix, or both (separated by a space).
func destination(d manifest.Destination) string {
	var where []string
	if d.Pod != "" {
		where = append(where, fmt.Sprintf("%s/%s/%s:%s", d.Namespace, d.Pod, d.Container, d.Dir))
	}
	if d.Bucket != "" {
		where = append(where, d.Bucket)
	}
	return strings.Join(where, " ")
}

// ImageDigest is the digest part ("sha256:...") of a container status's imageID, which
// runtimes write as "repo@sha256:..." or "sha256:..."; "" when it has none.
func ImageDigest(imageID string) string {
	if i := strings.LastIndex(imageID, "sha256:"); i >= 0 {
		return imageID[i:]
	}
	return ""
}

// FollowPredicateType names the predicate of a followed file's segment in a bucket.
const FollowPredicateType = "https://podcopy.dev/follow-segment/v1"

// FollowEndPredicateType names the predicate of a followed file's closing record: written
// when the follow ends, it binds the chain's last segment, so a cut tail is seen.
const FollowEndPredicateType = "https://podcopy.dev/follow-end/v1"

// Statement is the in-toto Statement of subjects and collection predicate p, as JSON.
func Statement(subjects []Subject, p Predicate) ([]byte, error) {
	pred, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	err = writeStatement(&b, slices.Values(subjects), PredicateType, pred)
	return b.Bytes(), err
}

// Seal signs the statement of subjects and p with key: the DSSE envelope, as JSON.
func Seal(ctx context.Context, key *PrivateKey, subjects []Subject, p Predicate) ([]byte, error) {
	return SealAs(ctx, key, subjects, PredicateType, p)
}

// SealAs signs a statement of subjects with a predicate of another type (a follow segment's).
func SealAs(ctx context.Context, key *PrivateKey, subjects []Subject, predicateType string, p any) ([]byte, error) {
	s, err := SealStream(ctx, key, slices.Values(subjects), predicateType, p)
	if err != nil {
		return nil, err
	}
	return s.Bytes(), nil
}

// Record is a verified custody record.
type Record struct {
	// KeyID is the key whose signature verified.
	KeyID string
	// Signer is who signed: the key, or the node's certificate and the trusted time.
	Signer Signer
	// Subjects maps each signed name to its hex SHA-256.
	Subjects map[string]string
	// Versions maps a signed name to its bucket object's version id, where one was recorded.
	Versions map[string]string
	// Members maps a bundled file's name to where its bytes are (bucket bundles).
	Members map[string]Member
	// PredicateType is the statement's; Predicate is decoded when it is PredicateType (a
	// collection), Raw holds the predicate as JSON whatever its type.
	PredicateType string
	Predicate     Predicate
	Raw           json.RawMessage
}

// Names are the signed names in order.
func (r Record) Names() []string { return slices.Sorted(maps.Keys(r.Subjects)) }

// ErrNoKeys is verification without any public key to verify with.
var ErrNoKeys = errors.New("no public key to verify the custody record with (kubectl podcopy key prints the published ones; pass --key FILE offline)")

// Verify checks a record's signature against trust and returns the record it signs: a DSSE
// envelope with any one of trust's keys (keys rotate), or a Sigstore bundle whose certificate
// chains to trust's roots at its trusted timestamp, is not revoked, and names the node the
// record says it was collected on. Nothing of the record is returned unless it verified.
func Verify(ctx context.Context, record []byte, trust Trust) (Record, error) {
	if len(record) > MaxRecordBytes {
		return Record{}, fmt.Errorf("custody record larger than %d bytes", MaxRecordBytes)
	}
	var doc struct {
		dsse.Envelope
		bundleJSON
		Bundled *dsse.Envelope `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(record, &doc); err != nil {
		return Record{}, fmt.Errorf("custody record is not a DSSE envelope or a Sigstore bundle: %w", err)
	}
	env := &doc.Envelope
	var vs []dsse.Verifier
	var signer Signer
	if doc.MediaType != "" {
		if env = doc.Bundled; env == nil || len(env.Signatures) != 1 {
			return Record{}, errors.New("custody record's bundle holds no DSSE envelope with one signature")
		}
		sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
		if err != nil {
			return Record{}, fmt.Errorf("custody record's signature: %w", err)
		}
		pub, s, err := certified(doc.bundleJSON, sig, trust)
		if err != nil {
			return Record{}, err
		}
		vs, signer = []dsse.Verifier{pub}, s
	} else {
		if len(trust.Keys) == 0 {
			if len(trust.Roots) > 0 {
				return Record{}, errors.New("the custody record is signed by a bare key (no certificate), and no such key is published or given: only certified records are trusted here")
			}
			return Record{}, ErrNoKeys
		}
		for _, k := range trust.Keys {
			vs = append(vs, k)
		}
	}
	if env.PayloadType != PayloadType {
		return Record{}, fmt.Errorf("custody record's payload type is %q, not %s", env.PayloadType, PayloadType)
	}
	v, err := dsse.NewEnvelopeVerifier(vs...)
	if err != nil {
		return Record{}, err
	}
	accepted, body, err := v.VerifyAndDecode(ctx, env)
	if err != nil || len(accepted) == 0 {
		if signer.Node != "" {
			return Record{}, fmt.Errorf("the custody record's signature does not verify with the key of its certificate (node %s): the record was changed", signer.Node)
		}
		ids := make([]string, len(trust.Keys))
		for i, k := range trust.Keys {
			ids[i] = k.ID()
		}
		return Record{}, fmt.Errorf("the custody record's signature does not verify with any of the %d public keys (%s): the record was changed, or signed by another key", len(trust.Keys), strings.Join(ids, ", "))
	}
	if signer.KeyID == "" {
		signer.KeyID = accepted[0].KeyID
	}
	var st ita1.Statement
	if err := protojson.Unmarshal(body, &st); err != nil {
		return Record{}, fmt.Errorf("custody statement: %w", err)
	}
	if err := st.Validate(); err != nil {
		return Record{}, fmt.Errorf("custody statement: %w", err)
	}
	if pt := st.GetPredicateType(); pt != PredicateType && pt != FollowPredicateType && pt != FollowEndPredicateType {
		return Record{}, fmt.Errorf("custody statement's predicate type is %q, not %s", st.GetPredicateType(), PredicateType)
	}
	rec := Record{KeyID: signer.KeyID, Signer: signer, Subjects: map[string]string{}, Versions: map[string]string{}, Members: map[string]Member{}, PredicateType: st.GetPredicateType()}
	for _, s := range st.GetSubject() {
		sum, ok := s.GetDigest()["sha256"]
		if !ok {
			return Record{}, fmt.Errorf("custody subject %q has no sha256 digest", s.GetName())
		}
		if _, dup := rec.Subjects[s.GetName()]; dup {
			return Record{}, fmt.Errorf("custody subject %q appears twice", s.GetName())
		}
		rec.Subjects[s.GetName()] = sum
		ann := s.GetAnnotations().GetFields()
		if v := ann[VersionAnnotation].GetStringValue(); v != "" {
			rec.Versions[s.GetName()] = v
		}
		if b := ann[BundleAnnotation].GetStringValue(); b != "" {
			m, err := member(b, ann[BundleOffsetAnnotation], ann[BundleSizeAnnotation])
			if err != nil {
				return Record{}, fmt.Errorf("custody subject %q: %w", s.GetName(), err)
			}
			rec.Members[s.GetName()] = m
		}
	}
	pj, err := st.GetPredicate().MarshalJSON()
	if err != nil {
		return Record{}, err
	}
	rec.Raw = pj
	if rec.PredicateType == PredicateType {
		if err := json.Unmarshal(pj, &rec.Predicate); err != nil {
			return Record{}, fmt.Errorf("custody predicate: %w", err)
		}
	}
	if signer.Node != "" {
		if node := recordNode(rec); node != signer.Node {
			return Record{}, fmt.Errorf("the custody record says it was written on node %q, but it is signed with node %s's certificate: a node signs only for itself", node, signer.Node)
		}
	}
	return rec, nil
}

// recordNode is the node a record says it was written on: a collection's node, a follow
// record's agent node.
func recordNode(rec Record) string {
	if rec.PredicateType == PredicateType {
		return rec.Predicate.Node
	}
	var p struct {
		Agent struct {
			Node string `json:"node"`
		} `json:"agent"`
	}
	_ = json.Unmarshal(rec.Raw, &p)
	return p.Agent.Node
}

// maxOffset bounds a bundle's offsets and sizes: integers a JSON number holds exactly.
const maxOffset = 1 << 53

// member reads a bundled subject's place from its annotations.
func member(bundle string, offset, size *structpb.Value) (Member, error) {
	o, n := offset.GetNumberValue(), size.GetNumberValue()
	if o < 0 || n < 0 || o >= maxOffset || n >= maxOffset || o != float64(int64(o)) || n != float64(int64(n)) {
		return Member{}, fmt.Errorf("bundle %q: offset %v and size %v are not whole byte counts", bundle, o, n)
	}
	return Member{Bundle: bundle, Offset: int64(o), Size: int64(n)}, nil
}

// SegmentPredicate is what a followed file's segment record says (predicate type
// FollowPredicateType, contract §4).
type SegmentPredicate struct {
	// Pod, Container and Path name the followed file; Agent the writer.
	Pod       Pod            `json:"pod"`
	Container string         `json:"container"`
	Path      string         `json:"path"`
	Agent     map[string]any `json:"agent,omitempty"`
	// Seq numbers the segments from 1; DestOffset is where the segment starts in the
	// harvested file (the sum of the segments before it).
	Seq        int   `json:"seq"`
	DestOffset int64 `json:"destOffset"`
	Length     int64 `json:"length"`
	// Source is the checkpoint the segment starts at (the source file's inode, its prefix,
	// and offset), as the agent's follow engine writes it.
	Source json.RawMessage `json:"source"`
	// Previous is the SHA-256 of the previous segment's record ("" for the first).
	Previous string `json:"previous"`
	Time     string `json:"time"`
	// SegmentVersion is the segment object's version id in a bucket with versioning.
	SegmentVersion string `json:"segmentVersion,omitempty"`
}

// FollowEnd is what a chain's closing record says (predicate type
// FollowEndPredicateType): the followed file, its last segment and that segment record's
// SHA-256 (the record's one subject), so a tail cut after it is seen.
type FollowEnd struct {
	Pod       Pod    `json:"pod"`
	Container string `json:"container"`
	Path      string `json:"path"`
	LastSeq   int    `json:"lastSeq"`
	Last      string `json:"last"`
	Bytes     int64  `json:"bytes"`
	Why       string `json:"why,omitempty"`
	Time      string `json:"time"`
	// Agent is the writer (its version and node), as in the segments.
	Agent map[string]any `json:"agent,omitempty"`
}
