// Package layout is the one owner of every path the agent writes or removes in an analysis
// pod (SPEC §3, §4). Each path is built here from checked parts and refused unless it lies
// strictly below <dir>/<namespace>/<pod>/ of the pod being collected, so nothing a request
// names (a path, a glob match, a tar entry) can reach another pod's evidence, the
// checkpoints of another file, or anything else in the analysis pod.
package layout

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podcopy/podcopy/pkg/pathname"
)

// Directory names below a pod's root. Neither can be a collection id or a container name.
const (
	StagingName    = ".partial"
	FollowName     = "follow"
	CheckpointName = ".checkpoints"
	ManifestName   = "manifest.json"
	// CustodyName is the signed custody record beside the manifest (package custody).
	CustodyName = "custody.intoto.json"
	// RecordsName is the directory of a collection holding the pod's own records
	// (podcopy/include); "_" cannot start a container name.
	RecordsName = "_pod"
	// LedgerName is the namespace's directory of quota reservations (<dir>/<namespace>/
	// .quota); a pod name cannot start with ".".
	LedgerName = ".quota"
	// BundlesName is the directory of a collection's bundles in a bucket: tar objects that
	// each hold many small files (issue 35); "_" cannot start a container name.
	BundlesName = "_bundles"
)

// BundleName is the name, relative to the collection, of its n-th bundle (n from 1).
func BundleName(n int) string { return fmt.Sprintf("%s/%06d.tar", BundlesName, n) }

// IsBundle is true when name, relative to the collection, is a bundle's.
func IsBundle(name string) bool {
	rest, ok := strings.CutPrefix(name, BundlesName+"/")
	return ok && !strings.Contains(rest, "/") && strings.HasSuffix(rest, ".tar")
}

// collectionID is SPEC §3's <UTC start>-<first 8 hex of the request id>.
var collectionID = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)

// Layout is the destination tree of one source pod.
type Layout struct {
	dir, namespace, pod string
}

// New checks the parts: dir is a canonical absolute path, namespace a DNS label and pod a
// DNS subdomain (the API server's own rules for those names).
func New(dir, namespace, pod string) (Layout, error) {
	if err := pathname.Canonical(dir); err != nil {
		return Layout{}, fmt.Errorf("destination dir: %w", err)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return Layout{}, fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(pod); len(errs) > 0 {
		return Layout{}, fmt.Errorf("pod name %q: %s", pod, strings.Join(errs, "; "))
	}
	return Layout{dir: dir, namespace: namespace, pod: pod}, nil
}

// Root is <dir>/<namespace>/<pod>: everything of this pod is strictly below it.
func (l Layout) Root() string { return path.Join(l.dir, l.namespace, l.pod) }

// NamespaceDir is <dir>/<namespace>: what the namespace's quota measures.
func (l Layout) NamespaceDir() string { return path.Join(l.dir, l.namespace) }

// Ledger is <dir>/<namespace>/.quota, the namespace's quota reservations (one file per
// collection in flight, named by Reservation).
func (l Layout) Ledger() string { return path.Join(l.NamespaceDir(), LedgerName) }

// Reservation names collection id's reservation in the Ledger: <pod>_<id> ("_" is in no
// pod name, so no two pods' names meet).
func (l Layout) Reservation(id string) (string, error) {
	if err := ValidCollectionID(id); err != nil {
		return "", err
	}
	return l.pod + "_" + id, nil
}

// StagingRoot is <root>/.partial, where collections are extracted before they are complete.
func (l Layout) StagingRoot() string { return path.Join(l.Root(), StagingName) }

// ValidCollectionID fails for anything that is not one collection id
// (<YYYYMMDDThhmmssZ>-<8 hex>): no slash, no dots, nothing else.
func ValidCollectionID(id string) error {
	if !collectionID.MatchString(id) {
		return fmt.Errorf("collection id %q is not <YYYYMMDDThhmmssZ>-<8 hex>", id)
	}
	return nil
}

// Collection is <root>/<id>, the final name of a complete collection.
func (l Layout) Collection(id string) (string, error) {
	if err := ValidCollectionID(id); err != nil {
		return "", err
	}
	return l.confine(path.Join(l.Root(), id))
}

// Staging is <root>/.partial/<id>.
func (l Layout) Staging(id string) (string, error) {
	if _, err := l.Collection(id); err != nil {
		return "", err
	}
	return l.confine(path.Join(l.StagingRoot(), id))
}

// Entry is the tar entry name, relative to StagingRoot, of the source file src (canonical,
// absolute) of container in collection id: <id>/<container>/<src without the leading />.
func (l Layout) Entry(id, container, src string) (string, error) {
	if _, err := l.Collection(id); err != nil {
		return "", err
	}
	if err := checkContainer(container); err != nil {
		return "", err
	}
	if err := pathname.Canonical(src); err != nil {
		return "", fmt.Errorf("source path: %w", err)
	}
	rel := path.Join(id, container, src)
	if _, err := l.confine(path.Join(l.StagingRoot(), rel)); err != nil {
		return "", err
	}
	return rel, nil
}

// EntryDir is the tar entry name, relative to StagingRoot, of a directory of the collection
// ("" for the collection itself, or a container name).
func (l Layout) EntryDir(id, container string) (string, error) {
	if _, err := l.Collection(id); err != nil {
		return "", err
	}
	if container == "" {
		return id, nil
	}
	if err := checkContainer(container); err != nil {
		return "", err
	}
	return path.Join(id, container), nil
}

// ManifestEntry is the manifest's tar entry name, relative to StagingRoot.
func (l Layout) ManifestEntry(id string) (string, error) {
	if _, err := l.Collection(id); err != nil {
		return "", err
	}
	return path.Join(id, ManifestName), nil
}

// CustodyEntry is the custody record's tar entry name, relative to StagingRoot.
func (l Layout) CustodyEntry(id string) (string, error) {
	if _, err := l.Collection(id); err != nil {
		return "", err
	}
	return path.Join(id, CustodyName), nil
}

// RecordEntry is the tar entry name, relative to StagingRoot, of the pod record name
// (relative to the collection: "_pod/...", canonical).
func (l Layout) RecordEntry(id, name string) (string, error) {
	if _, err := l.Collection(id); err != nil {
		return "", err
	}
	if err := pathname.Canonical("/" + name); err != nil || !strings.HasPrefix(name, RecordsName+"/") {
		return "", fmt.Errorf("pod record name %q is not a clean name below %s/", name, RecordsName)
	}
	rel := path.Join(id, name)
	if _, err := l.confine(path.Join(l.StagingRoot(), rel)); err != nil {
		return "", err
	}
	return rel, nil
}

// SubjectEntry is the entry name, relative to StagingRoot, of a custody record's subject
// (a name relative to collection id, as the record names it): <id>/<subject>.
func (l Layout) SubjectEntry(id, subject string) (string, error) {
	if _, err := l.Collection(id); err != nil {
		return "", err
	}
	if err := pathname.Canonical("/" + subject); err != nil {
		return "", fmt.Errorf("custody subject %q: %w", subject, err)
	}
	rel := path.Join(id, subject)
	if _, err := l.confine(path.Join(l.StagingRoot(), rel)); err != nil {
		return "", err
	}
	return rel, nil
}

// ObjectKey is the bucket key of entry (an entry name from Entry, ManifestEntry or
// CustodyEntry): <namespace>/<pod>/<entry>, the same tree as in the analysis pod.
func (l Layout) ObjectKey(entry string) string { return path.Join(l.namespace, l.pod, entry) }

// ObjectPrefix is the bucket prefix of collection id: <namespace>/<pod>/<id>/.
func (l Layout) ObjectPrefix(id string) string { return path.Join(l.namespace, l.pod, id) + "/" }

// FollowDir is <root>/follow/<container>.
func (l Layout) FollowDir(container string) (string, error) {
	if err := checkContainer(container); err != nil {
		return "", err
	}
	return l.confine(path.Join(l.Root(), FollowName, container))
}

// FollowFile returns where the followed file src of container lands,
// <root>/follow/<container>/<src>, and its checkpoint,
// <root>/follow/.checkpoints/<container>/<src>.
func (l Layout) FollowFile(container, src string) (file, checkpoint string, err error) {
	dir, err := l.FollowDir(container)
	if err != nil {
		return "", "", err
	}
	if err := pathname.Canonical(src); err != nil {
		return "", "", fmt.Errorf("followed path: %w", err)
	}
	if file, err = l.confine(path.Join(dir, src)); err != nil {
		return "", "", err
	}
	checkpoint, err = l.confine(path.Join(l.Root(), FollowName, CheckpointName, container, src))
	return file, checkpoint, err
}

// FollowObjectPrefix is the bucket prefix of a followed file's segments for one pod
// instance: <namespace>/<pod>/follow/<container>/<src without the leading />/<uid>/.
func (l Layout) FollowObjectPrefix(container, src, uid string) (string, error) {
	if _, _, err := l.FollowFile(container, src); err != nil {
		return "", err
	}
	if !podUID.MatchString(uid) {
		return "", fmt.Errorf("pod UID %q is not a UID", uid)
	}
	return path.Join(l.namespace, l.pod, FollowName, container, strings.TrimPrefix(src, "/"), uid) + "/", nil
}

// podUID is the form of a Kubernetes UID (RFC 4122 text).
var podUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// RetiredFollowFile is where an earlier pod's (uid; same name, another UID) harvested file
// of src and its checkpoint are set aside when a new pod with that name is followed:
// <file>.pod-<uid> and <checkpoint>.pod-<uid> (SPEC §4).
func (l Layout) RetiredFollowFile(container, src, uid string) (file, checkpoint string, err error) {
	if !podUID.MatchString(uid) {
		return "", "", fmt.Errorf("pod UID %q is not a UID", uid)
	}
	f, c, err := l.FollowFile(container, src)
	if err != nil {
		return "", "", err
	}
	if file, err = l.confine(f + ".pod-" + uid); err != nil {
		return "", "", err
	}
	checkpoint, err = l.confine(c + ".pod-" + uid)
	return file, checkpoint, err
}

// confine refuses p unless it is clean and strictly below Root.
func (l Layout) confine(p string) (string, error) {
	root := l.Root()
	if path.Clean(p) != p || !strings.HasPrefix(p, root+"/") {
		return "", fmt.Errorf("destination path %q is not below %s/", p, root)
	}
	return p, nil
}

func checkContainer(c string) error {
	if errs := validation.IsDNS1123Label(c); len(errs) > 0 {
		return fmt.Errorf("container name %q: %s", c, strings.Join(errs, "; "))
	}
	return nil
}

// A followed file in a bucket is a chain of objects below its prefix (FollowObjectPrefix):
// segment N is "<N as 10 digits>.seg", its signed record "<N>.intoto.json", and the closing
// record written when a follow ends after segment N "<N>.end.intoto.json".
const (
	segmentSuffix = ".seg"
	recordSuffix  = ".intoto.json"
	endSuffix     = ".end.intoto.json"
	seqDigits     = 10
)

// SegmentName is segment seq's object name below its followed file's prefix.
func SegmentName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, segmentSuffix) }

// RecordName is the name of segment seq's signed record.
func RecordName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, recordSuffix) }

// EndName is the name of the closing record written when a follow ends after segment seq.
func EndName(seq int) string { return fmt.Sprintf("%0*d%s", seqDigits, seq, endSuffix) }

// ChainObject is what a name below a followed file's prefix is: a segment, its record or a
// closing record, with its sequence number (kind "" for anything else). Names are parsed
// within a bounded length: exactly 10 digits, so a planted "99999999999.seg" is no segment.
func ChainObject(name string) (kind string, seq int) {
	for _, k := range []string{endSuffix, recordSuffix, segmentSuffix} {
		num, ok := strings.CutSuffix(name, k)
		if !ok || len(num) != seqDigits || strings.Trim(num, "0123456789") != "" {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil || n <= 0 {
			return "", 0
		}
		return k, n
	}
	return "", 0
}

// Kinds of ChainObject.
const (
	ChainSegment = segmentSuffix
	ChainRecord  = recordSuffix
	ChainEnd     = endSuffix
)
