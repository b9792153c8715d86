// Package hostile writes the archives a compromised container's tar could send: sparse
// entries of every flavour, huge or endless entries nobody asked for, a slow drip, crafted
// names. Unit tests, the fuzz target's seeds and the e2e suite's hostile image (hack/testapp
// run as tar) share it, so each attack is written once.
package hostile

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Kinds of hostile archive, each named for what it attacks.
const (
	// SparseGNU is an old-GNU sparse entry (typeflag S) with an empty map and a real size of
	// 2^62 in base-256: Go's reader serves it as zeros without reading input.
	SparseGNU = "sparse-gnu"
	// SparsePAX is a GNU PAX 1.0 sparse entry of 2^62 bytes of holes.
	SparsePAX = "sparse-pax"
	// HugeSkipped is a 100 GiB entry nobody asked for, its zeros really sent.
	HugeSkipped = "huge-skipped"
	// Endless is an entry claiming 1 TiB whose bytes never stop.
	Endless = "endless"
	// Drip claims 1 TiB and sends one byte per DripEvery: it never stalls and never ends.
	Drip = "drip"
	// Crafted holds ../, absolute names, a symlink then a file through it, a device, names
	// nobody asked for, a file then a directory of the same name, and a hard link reusing a
	// written name; OK is collected among them.
	Crafted = "crafted"
	// Slow is not an attack: a legitimate 75-block file sent one 512-byte block per
	// DripEvery (150 s at the default), to prove a slow collection is never swept as stale.
	Slow = "slow"
	// CraftedMany is Crafted after ManyFiles small files: the attacks come when the agent's
	// index of written names has left memory for its file.
	CraftedMany = "crafted-many"
	// LongNames holds many skipped entries with 64 KiB names (a small archive, a huge
	// manifest unless names are bounded).
	LongNames = "long-names"
)

// Kinds lists every kind.
var Kinds = []string{SparseGNU, SparsePAX, HugeSkipped, Endless, Drip, Crafted, CraftedMany, LongNames, Slow}

// ManyFiles is how many files CraftedMany sends before its attacks.
const ManyFiles = 20_000

// SlowBlocks is the size of Slow's file in 512-byte blocks.
const SlowBlocks = 75

// DripEvery is the pace of Drip.
var DripEvery = 2 * time.Second

// OK is the one legitimate file every archive holds first (below dir), with OKData.
const (
	OK     = "ok.log"
	OKData = "legitimate evidence\n"
)

// Write writes the archive of kind for the requested directory dir (absolute, e.g.
// "/var/log/app") to w, until it is complete or w fails. Endless and Drip never complete.
func Write(w io.Writer, kind, dir string) error {
	rel := "." + dir
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel + "/" + OK, Size: int64(len(OKData)), Mode: 0o644, ModTime: time.Unix(1e9, 0)}); err != nil {
		return err
	}
	if _, err := tw.Write([]byte(OKData)); err != nil {
		return err
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := w.Write(b.Bytes()); err != nil {
		return err
	}
	switch kind {
	case SparseGNU:
		if _, err := w.Write(sparseGNU(rel + "/sparse")); err != nil {
			return err
		}
	case SparsePAX:
		if _, err := w.Write(sparsePAX(rel + "/sparse")); err != nil {
			return err
		}
	case HugeSkipped:
		if _, err := w.Write(header("./etc/huge", tar.TypeReg, 100<<30)); err != nil {
			return err
		}
		if err := zeros(w, 100<<30, 0); err != nil {
			return err
		}
	case Endless:
		if _, err := w.Write(header(rel+"/endless", tar.TypeReg, 1<<40)); err != nil {
			return err
		}
		return zeros(w, 1<<40, 0)
	case Drip:
		if _, err := w.Write(header("./etc/drip", tar.TypeReg, 1<<40)); err != nil {
			return err
		}
		return zeros(w, 1<<40, DripEvery)
	case Crafted, CraftedMany:
		many := 0
		if kind == CraftedMany {
			many = ManyFiles
		}
		for i := range many {
			if _, err := w.Write(regular(fmt.Sprintf("%s/many/f%05d", rel, i), strconv.Itoa(i))); err != nil {
				return err
			}
		}
		if _, err := w.Write(crafted(rel)); err != nil {
			return err
		}
	case Slow:
		if _, err := w.Write(header(rel+"/slow.log", tar.TypeReg, SlowBlocks*512)); err != nil {
			return err
		}
		block := []byte(strings.Repeat("slow but legitimate line\n", 21) + "...........\n")
		for range SlowBlocks {
			if _, err := w.Write(block[:512]); err != nil {
				return err
			}
			time.Sleep(DripEvery)
		}
	case LongNames:
		for i := range 64 {
			name := "./etc/" + strings.Repeat("n", 64<<10) + strconv.Itoa(i)
			if _, err := w.Write(paxNamed(name, tar.TypeSymlink)); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown hostile archive %q (one of %v)", kind, Kinds)
	}
	_, err := w.Write(make([]byte, 1024)) // end of archive
	return err
}

// zeros writes n zero bytes, one byte per every when every > 0. The sleeps here (and in
// Slow) are the simulated source's pace, which is the attack itself; they stand in for no
// signal: the writer ends when a write fails, i.e. when the agent closes the stream.
func zeros(w io.Writer, n int64, every time.Duration) error {
	chunk := make([]byte, 256<<10)
	if every > 0 {
		chunk = chunk[:1]
	}
	for n > 0 {
		c := chunk[:min(int64(len(chunk)), n)]
		if _, err := w.Write(c); err != nil {
			return err
		}
		n -= int64(len(c))
		if every > 0 {
			time.Sleep(every)
		}
	}
	return nil
}

// header is a ustar header block, its checksum set.
func header(name string, typ byte, size int64) []byte {
	h := make([]byte, 512)
	copy(h[0:100], name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	if size < 1<<33 {
		copy(h[124:136], fmt.Sprintf("%011o\x00", size))
	} else {
		h[124] = 0x80 // base-256
		binary.BigEndian.PutUint64(h[128:136], uint64(size))
	}
	copy(h[136:148], fmt.Sprintf("%011o\x00", 1000000000))
	h[156] = typ
	copy(h[257:263], "ustar\x00")
	copy(h[263:265], "00")
	return checksum(h)
}

func checksum(h []byte) []byte {
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

// sparseGNU is an old-GNU sparse header: no stored data, an empty map, real size 2^62.
func sparseGNU(name string) []byte {
	h := header(name, tar.TypeGNUSparse, 0)
	copy(h[257:265], "ustar  \x00") // GNU magic and version
	h[483] = 0x80                   // realsize, base-256
	binary.BigEndian.PutUint64(h[487:495], 1<<62)
	return checksum(h)
}

// paxRecord is one "<len> key=value\n" record.
func paxRecord(k, v string) string {
	s := " " + k + "=" + v + "\n"
	n := len(s)
	for len(strconv.Itoa(n))+len(s) != n {
		n = len(strconv.Itoa(n)) + len(s)
	}
	return strconv.Itoa(n) + s
}

func padded(b []byte) []byte {
	return append(b, make([]byte, (512-len(b)%512)%512)...)
}

// sparsePAX is a GNU PAX 1.0 sparse entry: its map ("0" regions) in the data, 2^62 of holes.
func sparsePAX(name string) []byte {
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") +
		paxRecord("GNU.sparse.name", name) + paxRecord("GNU.sparse.realsize", strconv.FormatInt(1<<62, 10))
	out := header("./PaxHeaders/sparse", tar.TypeXHeader, int64(len(recs)))
	out = append(out, padded([]byte(recs))...)
	out = append(out, header("./GNUSparseFile.0/sparse", tar.TypeReg, 512)...)
	return append(out, padded([]byte("0\n"))...)
}

// paxNamed is an entry of type typ whose name is set by a PAX record.
func paxNamed(name string, typ byte) []byte {
	recs := paxRecord("path", name)
	if typ == tar.TypeSymlink || typ == tar.TypeLink {
		recs += paxRecord("linkpath", name)
	}
	out := header("./PaxHeaders/x", tar.TypeXHeader, int64(len(recs)))
	out = append(out, padded([]byte(recs))...)
	return append(out, header("./x", typ, 0)...)
}

func regular(name, data string) []byte {
	out := header(name, tar.TypeReg, int64(len(data)))
	return append(out, padded([]byte(data))...)
}

func crafted(rel string) []byte {
	var out []byte
	out = append(out, regular("../../etc/cron.d/evil", "x")...)
	out = append(out, regular("/etc/cron.d/evil", "x")...)
	out = append(out, regular(rel+"/../../../etc/evil", "x")...)
	s := header(rel+"/esc", tar.TypeSymlink, 0)
	copy(s[157:257], "/etc")
	out = append(out, checksum(s)...)
	out = append(out, regular(rel+"/esc/shadow", "through the link")...)
	out = append(out, header(rel+"/dev", tar.TypeChar, 0)...)
	out = append(out, regular("./etc/unasked", "nobody asked")...)
	// A file, then a directory of the same name, then a file below it.
	out = append(out, regular(rel+"/a", "file a")...)
	out = append(out, header(rel+"/a/", tar.TypeDir, 0)...)
	out = append(out, regular(rel+"/a/b", "below a file")...)
	// A file b, then b again as a hard link to a (the stored b would hold a's bytes).
	out = append(out, regular(rel+"/b", "file b")...)
	l := header(rel+"/b", tar.TypeLink, 0)
	copy(l[157:257], rel[2:]+"/a")
	out = append(out, checksum(l)...)
	return out
}
