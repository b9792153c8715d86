package ship

import (
	"fmt"
	"time"

	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/spool"
)

// Source spool bounds (Shipper.SourceSpool, Shipper.SpoolFullWait): what waits on the
// agent's disk after the spool's 8 MiB of memory, and for how long a source may wait on a
// full one before the collection fails with SpoolFull (pkg/spool says why these values).
const (
	DefaultSourceSpool   = spool.DefaultMax
	DefaultSpoolFullWait = spool.DefaultFullWait
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
