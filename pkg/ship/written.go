package ship

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

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
	sha256  [sha256.Size]byte
}

func keyOf(rel string) nameKey {
	sum := sha256.Sum256([]byte(rel))
	return nameKey(sum[:16])
}

// add records the manifest entry of the file whose name's key is k.
func (w writtenFiles) add(k nameKey, size int64, mode int64, modTime time.Time, sum []byte) {
	f := writtenFile{size: size, modTime: modTime.Unix(), mode: uint32(mode & 0o7777)}
	copy(f.sha256[:], sum)
	w[k] = f
}

// entry is the manifest entry of the file whose name's key is k, under path (a hard link's
// own path), if that file was written.
func (w writtenFiles) entry(k nameKey, path string) (manifest.File, bool) {
	f, ok := w[k]
	if !ok {
		return manifest.File{}, false
	}
	return manifest.File{Path: path, Size: f.size, Mode: fmt.Sprintf("%04o", f.mode),
		ModTime: time.Unix(f.modTime, 0).UTC().Format(time.RFC3339), SHA256: hex.EncodeToString(f.sha256[:])}, true
}
