package ship

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"time"

	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
)

// writtenFiles remembers each file written in a collection, so that a name seen twice is
// written once (a hostile tar may repeat a name to overwrite what was hashed) and a hard link
// to it is written as a link with the same hash. It is the one per-file state kept in memory
// (the manifest is spooled to disk), so each entry is small: a 128-bit digest of the name and
// the fields of its manifest entry in binary, about 100 bytes with the map's overhead (4×
// less than the manifest entry itself; 10 MB for 100,000 files).
type writtenFiles map[nameKey]writtenFile

type nameKey [16]byte

type writtenFile struct {
	size    int64
	modTime int64 // Unix seconds (the manifest's RFC 3339 has seconds)
	mode    uint32
	dir     bool // a directory (written, or made by tar for a file below it)
	sha256  [sha256.Size]byte
	at      Placement // where the bucket stored it
}

// conflict says why rel cannot be written as a file (dir false) or directory (dir true)
// without the stored tree disagreeing with the manifest: its name, or one of its parents',
// is already taken by an entry of another kind. "" when it can be written.
func (w writtenFiles) conflict(rel string, dir bool) string {
	if f, ok := w[keyOf(rel)]; ok {
		switch {
		case f.dir && !dir:
			return "a directory of this name was already written in this collection"
		case !f.dir:
			return "a file of this name was already written in this collection"
		}
	}
	for p := path.Dir(rel); p != "." && p != "/"; p = path.Dir(p) {
		f, ok := w[keyOf(p)]
		if !ok {
			continue
		}
		if !f.dir {
			return fmt.Sprintf("its parent %s was written as a file in this collection", "/"+p)
		}
		break // a directory recorded: so were its parents
	}
	return ""
}

// addDirs records rel (when dir) and its parents as directories.
func (w writtenFiles) addDirs(rel string) {
	for p := rel; p != "." && p != "/"; p = path.Dir(p) {
		k := keyOf(p)
		if _, ok := w[k]; ok {
			return
		}
		w[k] = writtenFile{dir: true}
	}
}

func keyOf(rel string) nameKey {
	sum := sha256.Sum256([]byte(rel))
	return nameKey(sum[:16])
}

// add records the manifest entry of the file whose name's key is k.
func (w writtenFiles) add(k nameKey, size int64, mode int64, modTime time.Time, sum []byte, at Placement) {
	f := writtenFile{size: size, modTime: modTime.Unix(), mode: uint32(mode & 0o7777), at: at}
	copy(f.sha256[:], sum)
	w[k] = f
}

// addFile records the file rel (key k) and its parents as directories.
func (w writtenFiles) addFile(rel string, k nameKey, size int64, mode int64, modTime time.Time, sum []byte, at Placement) {
	w.addDirs(path.Dir(rel))
	w.add(k, size, mode, modTime, sum, at)
}

// entry is the manifest entry of the file whose name's key is k, under path (a hard link's
// own path), and where it is stored, if that file was written.
func (w writtenFiles) entry(k nameKey, path string) (manifest.File, Placement, bool) {
	f, ok := w[k]
	if !ok || f.dir {
		return manifest.File{}, Placement{}, false
	}
	return placed(manifest.File{Path: path, Size: f.size, Mode: fmt.Sprintf("%04o", f.mode),
		ModTime: time.Unix(f.modTime, 0).UTC().Format(time.RFC3339), SHA256: hex.EncodeToString(f.sha256[:])}, f.at), f.at, true
}

// placed is f stored at at: the manifest names its bundle and offset.
func placed(f manifest.File, at Placement) manifest.File {
	if at.Bundle != 0 {
		f.Bundle, f.Offset = layout.BundleName(at.Bundle), at.Offset
	}
	return f
}
