package ship

import (
	"fmt"
	"time"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/spool"
)

// Source spool bounds (Shipper.SourceSpool): what waits on the agent's disk after the
// spool's 8 MiB of memory (pkg/spool).
const (
	// DefaultSourceSpool is the disk a collection's source stream may wait in when the
	// destination is slower than the source (Shipper.SourceSpool when zero): a whole
	// 100,000-file archive. A source held on a full spool waits on its exec stream, and the
	// relays lose the end of a stream whose reader is slower than its writer (measured with
	// hack/cutprobe: every run at 10 MB/s lost its last 1–3 MB, none at full speed).
	DefaultSourceSpool = 256 << 20
	// DefaultSpoolFullWait is how long a source may wait on a full spool before the
	// collection fails with SpoolFull: under the 61 s read deadline client-go's WebSocket
	// executor puts on a stream it does not read (measured: hack/stallprobe; SPDY held a
	// stream unread for 90 s and more), so a stalled destination ends a collection with its
	// own reason, never with a cut source.
	DefaultSpoolFullWait = 45 * time.Second
)

// SpoolMeter is told what the source spools hold (podcopy_source_spool_bytes, a
// prometheus.Gauge) and how often a source waited for a full one
// (podcopy_source_spool_waits_total, a prometheus.Counter). Either may be nil.
type SpoolMeter = spool.Meter

// SpoolFullError is a source that waited on a full spool for the spool's bound: the
// destination took nothing meanwhile. Transient: the destination may come back.
type SpoolFullError struct {
	Max  int64
	Wait time.Duration
}

func (e *SpoolFullError) Error() string {
	return fmt.Sprintf("the destination took nothing for %s while the source's spool was full (%d bytes): the source's stream was ended before anything on the way could cut it; the collection is retried", e.Wait, e.Max)
}

// FailureReason implements failure.Reasoned.
func (e *SpoolFullError) FailureReason() string { return failure.SpoolFull }
