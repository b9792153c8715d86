package ship

import (
	"bytes"
	"io"

	"github.com/klauspost/compress/gzip"
)

// The analysis pod's leg is compressed only when the archive compresses: gzip costs the
// agent little, but the analysis pod's tar -x -z (busybox gunzip) decodes incompressible
// data at ~130 MB/s on the local cluster's cores, slower than sending it plain (bench/).
const (
	// probeBytes of the archive are read before the analysis pod's codec is chosen.
	probeBytes = 1 << 20
	// minRatio is the archive / received ratio at which the analysis pod's leg is compressed.
	minRatio = 2
)

// destinationCodec is the analysis pod's leg: plain or gzip, chosen once, holding what is
// written before the choice (at most probeBytes of the archive and the entries before it).
type destinationCodec struct {
	dst    io.Writer       // the buffered exec stream
	chosen func(gzip bool) // tells the analysis pod's exec which codec to expect
	held   bytes.Buffer
	w      io.Writer // after the choice: dst, or zw on it
	zw     *gzip.Writer
}

func (d *destinationCodec) Write(p []byte) (int, error) {
	if d.w == nil {
		return d.held.Write(p)
	}
	return d.w.Write(p)
}

// choose fixes the codec (later calls do nothing) and sends what was held.
func (d *destinationCodec) choose(compress bool) error {
	if d.w != nil {
		return nil
	}
	d.w = d.dst
	if compress {
		// The fastest level: the agent shares the node's CPU with the API server and kubelet.
		d.zw, _ = gzip.NewWriterLevel(d.dst, gzip.BestSpeed)
		d.w = d.zw
	}
	d.chosen(compress)
	_, err := d.held.WriteTo(d.w)
	d.held = bytes.Buffer{}
	return err
}

// close ends the gzip stream, if any.
func (d *destinationCodec) close() error {
	if err := d.choose(false); err != nil {
		return err
	}
	if d.zw != nil {
		return d.zw.Close()
	}
	return nil
}

// probe calls decide once probeBytes have been read through it, or at the stream's end.
type probe struct {
	r      *countingReader
	decide func() error
	done   bool
}

func (p *probe) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if !p.done && (p.r.n >= probeBytes || err != nil) {
		p.done = true
		if derr := p.decide(); derr != nil {
			return n, derr
		}
	}
	return n, err
}
