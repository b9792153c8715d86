package ship

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/maphash"
	"os"
	"path"
	"time"

	"github.com/podcopy/podcopy/pkg/layout"
	"github.com/podcopy/podcopy/pkg/manifest"
)

// writtenFiles remembers each file written in a collection, so that a name seen twice is
// written once (a hostile tar may repeat a name to overwrite what was hashed) and a hard link
// to it is written as a link with the same hash. It is the one per-file state of a
// collection (the manifest is spooled to disk), and it too leaves memory: the first
// memIndexEntries names are held in a map (about 100 bytes each: a 128-bit digest of the
// name and the fields of its manifest entry in binary), and past that every entry moves to
// an unlinked file in the spool directory (indexFile), so the agent's memory does not grow
// with the number of files. I/O errors of the file are kept in err, which the collection
// checks after each entry.
type writtenFiles struct {
	mem  map[nameKey]writtenFile
	file *indexFile // once the map is full: every entry is here, the map is gone
	dir  string
	err  error
	// lastDir is the last name recorded or found as a directory: the files of one
	// directory look up their parent once.
	lastDir nameKey
	// last is the last lookup and its answer, until the next put: a file's name is looked
	// up once for its duplicate check and its conflicts.
	last      nameKey
	lastFile  writtenFile
	lastFound bool
	lastValid bool
}

// memIndexEntries is how many names the index holds in memory before it moves to its file
// (~1.6 MB).
const memIndexEntries = 16384

func newWrittenFiles(dir string) *writtenFiles {
	return &writtenFiles{mem: map[nameKey]writtenFile{}, dir: dir}
}

type nameKey [16]byte

type writtenFile struct {
	size    int64
	modTime int64 // Unix seconds (the manifest's RFC 3339 has seconds)
	mode    uint32
	dir     bool // a directory (written, or made by tar for a file below it)
	sha256  [sha256.Size]byte
	at      Placement // where the bucket stored it
}

func (w *writtenFiles) get(k nameKey) (writtenFile, bool) {
	if w.file == nil {
		f, ok := w.mem[k]
		return f, ok
	}
	if w.lastValid && w.last == k {
		return w.lastFile, w.lastFound
	}
	f, ok, err := w.file.get(k)
	if err != nil && w.err == nil {
		w.err = err
	}
	w.last, w.lastFile, w.lastFound, w.lastValid = k, f, ok, err == nil
	return f, ok
}

func (w *writtenFiles) put(k nameKey, f writtenFile) {
	w.lastValid = false
	if f.dir {
		w.lastDir = k
	}
	if w.err != nil {
		return
	}
	if w.file == nil && len(w.mem) < memIndexEntries {
		w.mem[k] = f
		return
	}
	if w.file == nil {
		if w.file, w.err = newIndexFile(w.dir, 8*memIndexEntries); w.err != nil {
			return
		}
		for k, f := range w.mem {
			if w.err = w.file.put(k, f); w.err != nil {
				return
			}
		}
		w.mem = nil
	}
	w.err = w.file.put(k, f)
}

// Close releases the index (its file, when it has one).
func (w *writtenFiles) Close() error {
	w.mem = nil
	if w.file == nil {
		return nil
	}
	err := w.file.close()
	w.file = nil
	return err
}

// isDir is true when rel was recorded as a directory.
func (w *writtenFiles) isDir(k nameKey) (recorded, dir bool) {
	if k == w.lastDir {
		return true, true
	}
	f, ok := w.get(k)
	if ok && f.dir {
		w.lastDir = k
	}
	return ok, f.dir
}

// conflict says why rel cannot be written as a file (dir false) or directory (dir true)
// without the stored tree disagreeing with the manifest: its name, or one of its parents',
// is already taken by an entry of another kind. "" when it can be written.
func (w *writtenFiles) conflict(rel string, dir bool) string {
	if ok, isDir := w.isDir(keyOf(rel)); ok {
		switch {
		case isDir && !dir:
			return "a directory of this name was already written in this collection"
		case !isDir:
			return "a file of this name was already written in this collection"
		}
	}
	for p := path.Dir(rel); p != "." && p != "/"; p = path.Dir(p) {
		ok, isDir := w.isDir(keyOf(p))
		if !ok {
			continue
		}
		if !isDir {
			return fmt.Sprintf("its parent %s was written as a file in this collection", "/"+p)
		}
		break // a directory recorded: so were its parents
	}
	return ""
}

// addDirs records rel (when dir) and its parents as directories.
func (w *writtenFiles) addDirs(rel string) {
	for p := rel; p != "." && p != "/"; p = path.Dir(p) {
		k := keyOf(p)
		if ok, _ := w.isDir(k); ok {
			return
		}
		w.put(k, writtenFile{dir: true})
	}
}

func keyOf(rel string) nameKey {
	sum := sha256.Sum256([]byte(rel))
	return nameKey(sum[:16])
}

// addFile records the file rel (key k) and its parents as directories.
func (w *writtenFiles) addFile(rel string, k nameKey, size int64, mode int64, modTime time.Time, sum []byte, at Placement) {
	w.addDirs(path.Dir(rel))
	f := writtenFile{size: size, modTime: modTime.Unix(), mode: uint32(mode & 0o7777), at: at}
	copy(f.sha256[:], sum)
	w.put(k, f)
}

// entry is the manifest entry of the file whose name's key is k, under path (a hard link's
// own path), and where it is stored, if that file was written.
func (w *writtenFiles) entry(k nameKey, path string) (manifest.File, Placement, bool) {
	f, ok := w.get(k)
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

// indexFile is a hash table of writtenFile in an unlinked file: open addressing with linear
// probing over fixed slots, read and written with pread/pwrite (nothing mapped, so none of it
// is the agent's memory; the kernel's page cache keeps what is hot). A slot's place is a
// seeded hash of the key, so a hostile archive cannot aim its names at one probe chain. It
// starts at 131,072 slots (11 MB of sparse file) and doubles (rewritten into a new file)
// when half full.
type indexFile struct {
	f     *os.File
	dir   string
	slots uint64 // a power of two
	n     uint64
	seed  maphash.Seed
	buf   [probeSlots * slotSize]byte
	// hint is the slot the last find gave for key hintKey, until the next write: a put
	// after a get of the same key does not probe again.
	hintKey  nameKey
	hintSlot uint64
	hintUsed bool
	hintOK   bool
}

const (
	// slotSize: key 16, flags 1, mode 4, size 8, modTime 8, sha256 32, bundle 8, offset 8.
	slotSize   = 85
	probeSlots = 8 // slots read at once while probing
	slotUsed   = 1
	slotDir    = 2
)

func newIndexFile(dir string, slots uint64) (*indexFile, error) {
	f, err := os.CreateTemp(dir, "podcopy-index-*")
	if err != nil {
		return nil, fmt.Errorf("file index: %w", err)
	}
	_ = os.Remove(f.Name()) // the open handle is all it needs; nothing is left on a crash
	if err := f.Truncate(int64(slots * slotSize)); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("file index: %w", err)
	}
	return &indexFile{f: f, dir: dir, slots: slots, seed: maphash.MakeSeed()}, nil
}

func (x *indexFile) close() error { return x.f.Close() }

// find returns the slot holding k, or the free slot where k goes, and what the slot holds.
func (x *indexFile) find(k nameKey) (slot uint64, b []byte, err error) {
	slot = maphash.Bytes(x.seed, k[:]) & (x.slots - 1)
	for probed := uint64(0); probed < x.slots; {
		n := min(probeSlots, x.slots-slot) // a read stops at the table's end; the probe wraps
		chunk := x.buf[:n*slotSize]
		if _, err := x.f.ReadAt(chunk, int64(slot*slotSize)); err != nil {
			return 0, nil, fmt.Errorf("file index: %w", err)
		}
		for i := range n {
			s := chunk[i*slotSize : (i+1)*slotSize]
			if s[16]&slotUsed == 0 || [16]byte(s[:16]) == k {
				return slot + i, s, nil
			}
		}
		probed += n
		slot = (slot + n) & (x.slots - 1)
	}
	return 0, nil, fmt.Errorf("file index: full at %d entries", x.n) // never: it doubles at half
}

func (x *indexFile) get(k nameKey) (writtenFile, bool, error) {
	slot, s, err := x.find(k)
	if err != nil {
		return writtenFile{}, false, err
	}
	x.hintKey, x.hintSlot, x.hintUsed, x.hintOK = k, slot, s[16]&slotUsed != 0, true
	if s[16]&slotUsed == 0 {
		return writtenFile{}, false, nil
	}
	f := writtenFile{
		mode:    binary.LittleEndian.Uint32(s[17:]),
		size:    int64(binary.LittleEndian.Uint64(s[21:])),
		modTime: int64(binary.LittleEndian.Uint64(s[29:])),
		dir:     s[16]&slotDir != 0,
		at:      Placement{Bundle: int(binary.LittleEndian.Uint64(s[69:])), Offset: int64(binary.LittleEndian.Uint64(s[77:]))},
	}
	copy(f.sha256[:], s[37:69])
	return f, true, nil
}

func (x *indexFile) put(k nameKey, f writtenFile) error {
	if 2*(x.n+1) > x.slots {
		if err := x.grow(); err != nil {
			return err
		}
	}
	var slot uint64
	used := false
	if x.hintOK && x.hintKey == k {
		slot, used = x.hintSlot, x.hintUsed
	} else {
		var s []byte
		var err error
		if slot, s, err = x.find(k); err != nil {
			return err
		}
		used = s[16]&slotUsed != 0
	}
	x.hintOK = false
	if !used {
		x.n++
	}
	var b [slotSize]byte
	copy(b[:16], k[:])
	b[16] = slotUsed
	if f.dir {
		b[16] |= slotDir
	}
	binary.LittleEndian.PutUint32(b[17:], f.mode)
	binary.LittleEndian.PutUint64(b[21:], uint64(f.size))
	binary.LittleEndian.PutUint64(b[29:], uint64(f.modTime))
	copy(b[37:69], f.sha256[:])
	binary.LittleEndian.PutUint64(b[69:], uint64(f.at.Bundle))
	binary.LittleEndian.PutUint64(b[77:], uint64(f.at.Offset))
	if _, err := x.f.WriteAt(b[:], int64(slot*slotSize)); err != nil {
		return fmt.Errorf("file index: %w", err)
	}
	return nil
}

// grow moves every entry into a table twice the size.
func (x *indexFile) grow() error {
	bigger, err := newIndexFile(x.dir, 2*x.slots)
	if err != nil {
		return err
	}
	var chunk [probeSlots * slotSize]byte
	for slot := uint64(0); slot < x.slots; slot += probeSlots {
		n := min(probeSlots, x.slots-slot)
		if _, err := x.f.ReadAt(chunk[:n*slotSize], int64(slot*slotSize)); err != nil {
			_ = bigger.close()
			return fmt.Errorf("file index: %w", err)
		}
		for i := range n {
			s := chunk[i*slotSize : (i+1)*slotSize]
			if s[16]&slotUsed == 0 {
				continue
			}
			dst, _, err := bigger.find(nameKey(s[:16]))
			if err == nil {
				_, err = bigger.f.WriteAt(s, int64(dst*slotSize))
			}
			if err != nil {
				_ = bigger.close()
				return fmt.Errorf("file index: %w", err)
			}
			bigger.n++
		}
	}
	_ = x.f.Close()
	*x = *bigger
	return nil
}
