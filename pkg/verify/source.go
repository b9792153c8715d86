package verify

import (
	"archive/tar"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// Entry is one file a source hands to a Sink.
type Entry struct {
	// Name is relative to the collection.
	Name    string
	Size    int64
	ModTime time.Time
}

// Sink is where checked bytes go while they are hashed: a directory (fetch), a new tar
// stream (the console's download), or nowhere (Discard: verify in place).
type Sink interface {
	// Mkdir makes a directory (and its parents).
	Mkdir(name string) error
	// Create writes a new regular file from r and returns its size and hex SHA-256.
	Create(e Entry, r io.Reader) (int64, string, error)
	// Link makes name the same content as target, written before, and returns its size and
	// hex SHA-256 (ErrNoLinkTarget when target was not written).
	Link(name, target string) (int64, string, error)
}

// Discard is a Sink that only hashes: verification where the user is, nothing written.
type Discard struct {
	buf  []byte
	sums map[string]hashed
}

// hashed is a file a Discard hashed, for a hard link to it later.
type hashed struct {
	size int64
	sum  string
}

// NewDiscard is a Discard with its copy buffer.
func NewDiscard() *Discard { return &Discard{buf: make([]byte, 256<<10), sums: map[string]hashed{}} }

// Mkdir implements Sink.
func (d *Discard) Mkdir(string) error { return nil }

// Create implements Sink.
func (d *Discard) Create(e Entry, r io.Reader) (int64, string, error) {
	n, sum, err := hashCopy(nil, r, d.buf)
	d.sums[e.Name] = hashed{n, sum}
	return n, sum, err
}

// Link implements Sink.
func (d *Discard) Link(name, target string) (int64, string, error) {
	s, ok := d.sums[target]
	if !ok {
		return 0, "", ErrNoLinkTarget
	}
	d.sums[name] = s
	return s.size, s.sum, nil
}

// Tar reads a collection's tar stream (names relative to the collection, "./" or not) into
// s, hashing every regular file as it passes. Only clean names of regular files and
// directories are handed to s; anything else is reported. The stream's manifest.json and
// record must be the bytes Open and Manifest checked.
func (c *Check) Tar(tr *tar.Reader, s Sink) error {
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the collection stream: %w", err)
		}
		name := strings.TrimPrefix(path.Clean(hdr.Name), "./")
		if name == "." {
			continue
		}
		if want, meta := c.meta(name); meta && hdr.Typeflag == tar.TypeReg {
			if want == "" { // a record where none was read: not written
				c.Extra(name, "appeared after the collection was checked")
				continue
			}
			n, sum, err := s.Create(Entry{Name: name, Size: hdr.Size, ModTime: hdr.ModTime}, tr)
			if err != nil {
				return err
			}
			c.Got(name, n, sum)
			continue
		}
		if pathname.Canonical("/"+name) != nil {
			c.Extra(hdr.Name, "not a clean name")
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := s.Mkdir(name); err != nil {
				return err
			}
			continue
		case tar.TypeReg, tar.TypeLink:
		default:
			c.Extra(name, "not a regular file")
			continue
		}
		if _, known := c.Expected(name); !known { // reported, nothing written
			c.Extra(name, "not in the "+c.origin())
			continue
		}
		var n int64
		var sum string
		if hdr.Typeflag == tar.TypeLink { // a hard link of a file written before
			n, sum, err = s.Link(name, strings.TrimPrefix(path.Clean(hdr.Linkname), "./"))
			if errors.Is(err, ErrNoLinkTarget) {
				c.Lost(name, "its hard link target is missing")
				continue
			}
		} else {
			n, sum, err = s.Create(Entry{Name: name, Size: hdr.Size, ModTime: hdr.ModTime}, tr)
		}
		if err != nil {
			return err
		}
		c.Got(name, n, sum)
	}
}

// Dir checks a fetched collection directory: every regular file below root is hashed
// (nothing is written) and compared; anything else, and any name nothing signed, is
// reported. The manifest and record were read by the caller for Open and Manifest.
func (c *Check) Dir(root *os.Root) error {
	buf := make([]byte, 256<<10)
	return fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || p == custody.FileName || p == custody.ManifestSubject {
			return nil
		}
		if _, ok := c.Expected(p); !ok || !d.Type().IsRegular() {
			c.Extra(p, "not in the "+c.origin())
			return nil
		}
		f, err := root.Open(p)
		if err != nil {
			return err
		}
		n, sum, err := hashCopy(nil, f, buf)
		_ = f.Close()
		if err != nil {
			return err
		}
		c.Got(p, n, sum)
		return nil
	})
}

// Version is one version of an object below a collection's prefix, as a versioned
// listing (ListObjectVersions) gives it.
type Version struct {
	// Name is relative to the collection's prefix.
	Name      string
	VersionID string
	// Latest is the version a plain GET reads; DeleteMarker hides the versions before it.
	Latest       bool
	DeleteMarker bool
	Size         int64
	ModTime      time.Time
}

// Opener reads one version of an object ("" versionID: the latest).
type Opener func(ctx context.Context, name, versionID string) (io.ReadCloser, error)

// RecordVersion is the version of the record to read: the agent writes it once, before
// anyone else can know the collection's id, so with several versions or a delete marker over
// it (tampering, which Bucket reports) the oldest one is the agent's. ok is false when no
// version holds a record.
func RecordVersion(versions []Version) (versionID string, ok bool) {
	var oldest *Version
	for i := range versions {
		v := &versions[i]
		if v.Name != custody.FileName || v.DeleteMarker {
			continue
		}
		if oldest == nil || !v.ModTime.After(oldest.ModTime) { // listings are newest first
			oldest = v
		}
	}
	if oldest == nil {
		return "", false
	}
	return oldest.VersionID, true
}

// Bucket checks a collection in a bucket from the listing of every version below its
// prefix: each signed object is read at exactly the version the record names (the latest
// when none is named), hashed into s; a newer version or a delete marker over a recorded
// one, and a record or manifest written more than once, is reported as tampering; objects
// nothing signed are reported as extra.
func (c *Check) Bucket(ctx context.Context, versions []Version, open Opener, s Sink) error {
	byName := map[string][]Version{}
	var names []string
	for _, v := range versions {
		if byName[v.Name] == nil {
			names = append(names, v.Name)
		}
		byName[v.Name] = append(byName[v.Name], v)
	}
	for _, name := range names {
		vs := byName[name]
		latest := latestOf(vs)
		switch name {
		case custody.FileName, custody.ManifestSubject:
			recorded := c.Version(name)
			if name == custody.FileName && len(vs) > 1 {
				c.Tampered(fmt.Sprintf("%s has %d versions and delete markers: the agent writes it once", name, len(vs)))
			} else if recorded != "" && latest.VersionID != recorded {
				c.Tampered(c.over(name, recorded, latest, slices.ContainsFunc(vs, func(v Version) bool { return v.VersionID == recorded })))
			} else if latest.DeleteMarker {
				c.Tampered(fmt.Sprintf("%s: a delete marker hides it", name))
			}
			continue
		}
		if pathname.Canonical("/"+name) != nil {
			c.Extra(name, "not a clean name")
			continue
		}
		if _, listed := c.bundles[name]; listed || c.membersOf(name) != nil {
			if err := c.bundle(ctx, name, vs, open, s); err != nil {
				return err
			}
			continue
		}
		f, expected := c.Expected(name)
		if !expected {
			if !latest.DeleteMarker {
				c.Extra(name, "not in the "+c.origin())
			}
			continue
		}
		read, ok := c.pick(f, vs)
		if !ok {
			c.seen[name] = true
			continue
		}
		body, err := open(ctx, name, f.VersionID)
		if err != nil {
			return err
		}
		n, sum, err := s.Create(Entry{Name: name, Size: read.Size, ModTime: read.ModTime}, body)
		_ = body.Close()
		if err != nil {
			return err
		}
		c.Got(name, n, sum)
	}
	return nil
}

// pick is the version of f to read among vs, its object's versions: the recorded one (the
// latest when none is recorded). What hides or replaced it is reported as tampering; ok is
// false when nothing of f can be read.
func (c *Check) pick(f File, vs []Version) (Version, bool) {
	latest := latestOf(vs)
	if f.VersionID == "" {
		if latest.DeleteMarker {
			c.Tampered(fmt.Sprintf("%s: a delete marker hides it", f.Source))
			return latest, false
		}
		return latest, true
	}
	for _, v := range vs {
		if v.VersionID == f.VersionID && !v.DeleteMarker {
			if latest.VersionID != f.VersionID {
				c.Tampered(c.over(f.Source, f.VersionID, latest, true))
			}
			return v, true
		}
	}
	// Its recorded version is gone: removed with the lock bypassed.
	c.Tampered(c.over(f.Source, f.VersionID, latest, false))
	return latest, false
}

// membersOf are the files bundle holds, in the order of their bytes.
func (c *Check) membersOf(bundle string) []File {
	if c.members == nil {
		c.members = map[string][]File{}
		for _, f := range c.expect {
			if f.Bundle != "" {
				c.members[f.Bundle] = append(c.members[f.Bundle], f)
			}
		}
		for _, ms := range c.members {
			slices.SortFunc(ms, func(a, b File) int {
				if a.Offset != b.Offset {
					return cmp.Compare(a.Offset, b.Offset)
				}
				return strings.Compare(a.Name, b.Name)
			})
		}
	}
	return c.members[bundle]
}

// bundle checks a bundle object (a tar of small files): the recorded version is read once,
// front to back, each member's bytes (placed by the record, or by the manifest when
// unsigned) hashed into s as a file of its own, and the whole object against the bundle's
// digest. A newer version over the recorded one is read too, to name each member it changes.
func (c *Check) bundle(ctx context.Context, name string, vs []Version, open Opener, s Sink) error {
	b, ok := c.bundles[name]
	if !ok {
		b = File{Name: name, Source: name}
	}
	members := c.membersOf(name)
	read, ok := c.pick(b, vs)
	if !ok {
		return nil // its members are missing
	}
	body, err := open(ctx, name, b.VersionID)
	if err != nil {
		return err
	}
	h := sha256.New()
	whole := io.TeeReader(body, h)
	err = unpack(whole, members, s, read.ModTime, c.Got, c.Lost)
	if err == nil {
		_, err = io.Copy(io.Discard, whole) // the rest (tar's end), for the bundle's digest
	}
	_ = body.Close()
	if err != nil {
		return err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); b.SHA256 != "" && sum != b.SHA256 {
		c.v.Mismatched = append(c.v.Mismatched, fmt.Sprintf("%s: sha256 %s, %s %s", name, sum, c.origin(), b.SHA256))
	}
	latest := latestOf(vs)
	if b.VersionID == "" || latest.VersionID == b.VersionID || latest.DeleteMarker {
		return nil
	}
	// A version written over the recorded one: which files would a reader of it be misled on?
	newer, err := open(ctx, name, latest.VersionID)
	if err != nil {
		return err
	}
	defer newer.Close()
	changed := func(m File, why string) {
		c.Tampered(fmt.Sprintf("%s (in %s): %s in version %s of the bundle, written over the recorded version %s that still holds the signed bytes", m.Source, name, why, latest.VersionID, b.VersionID))
	}
	// Only the members' bytes are read: the newer version is nobody's, its size unbounded.
	return unpack(newer, members, NewDiscard(), latest.ModTime, func(n string, _ int64, sum string) {
		if m := c.expect[n]; sum != m.SHA256 {
			changed(m, "changed")
		}
	}, func(n, why string) { changed(c.expect[n], why) })
}

// unpack reads a bundle from r up to the end of its last member and hands each of members
// (in the order of their bytes) to s: got is told what each holds, lost why one could not be
// read (a hard link, a member at the same bytes as the one before, is linked to it).
func unpack(r io.Reader, members []File, s Sink, mtime time.Time, got func(name string, size int64, sum string), lost func(name, why string)) error {
	var pos int64
	var prev *File
	for i := range members {
		m := &members[i]
		if pathname.Canonical("/"+m.Name) != nil {
			lost(m.Name, "not a clean name")
			continue
		}
		if prev != nil && m.Offset == prev.Offset && m.Size == prev.Size {
			n, sum, err := s.Link(m.Name, prev.Name)
			if errors.Is(err, ErrNoLinkTarget) {
				lost(m.Name, "the bundle does not hold it")
				continue
			}
			if err != nil {
				return err
			}
			got(m.Name, n, sum)
			continue
		}
		if m.Offset < pos {
			lost(m.Name, fmt.Sprintf("its bytes at offset %d overlap the file before it in %s", m.Offset, m.Bundle))
			continue
		}
		skipped, err := io.CopyN(io.Discard, r, m.Offset-pos)
		pos += skipped
		if errors.Is(err, io.EOF) {
			lost(m.Name, fmt.Sprintf("%s ends before its offset %d", m.Bundle, m.Offset))
			continue
		} else if err != nil {
			return err
		}
		n, sum, err := s.Create(Entry{Name: m.Name, Size: m.Size, ModTime: mtime}, io.LimitReader(r, m.Size))
		pos += n
		if err != nil {
			return err
		}
		got(m.Name, n, sum)
		prev = m
	}
	return nil
}

// over says what hides a recorded version.
func (c *Check) over(name, recorded string, latest Version, kept bool) string {
	switch {
	case !kept && latest.DeleteMarker:
		return fmt.Sprintf("%s: the recorded version %s is gone (removed with the lock bypassed), and a delete marker hides the name", name, recorded)
	case !kept:
		return fmt.Sprintf("%s: the recorded version %s is gone (removed with the lock bypassed); version %s stands in its place", name, recorded, latest.VersionID)
	case latest.DeleteMarker:
		return fmt.Sprintf("%s: a delete marker over the recorded version %s", name, recorded)
	}
	return fmt.Sprintf("%s: version %s written over the recorded version %s", name, latest.VersionID, recorded)
}

// latestOf is the latest of an object's versions (the first when none says so).
func latestOf(vs []Version) Version {
	for _, v := range vs {
		if v.Latest {
			return v
		}
	}
	return vs[0]
}
