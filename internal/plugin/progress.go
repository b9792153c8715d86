package plugin

import (
	"fmt"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/podcopy/podcopy/pkg/status"
)

// progress shows a running collection: a live bar on a terminal (mpb), plain lines
// otherwise, nothing with -o json.
type progress struct {
	o     *Options
	pod   string
	p     *mpb.Progress
	bar   *mpb.Bar
	files int
	last  time.Time
	shown string
	// shared: p belongs to several bars (collect -l); its owner waits for it.
	shared bool
	// prefix names the pod on plain lines when several are shown.
	prefix string
}

func newProgress(o *Options, pod string) *progress {
	pr := &progress{o: o, pod: pod}
	if o.Terminal && o.Output == "" {
		pr.p = newBars(o)
	}
	return pr
}

// newBars is a progress container for bars (on a terminal).
func newBars(o *Options) *mpb.Progress {
	return mpb.New(mpb.WithOutput(o.Err), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
}

// newSharedProgress is one bar among several in p (nil: plain lines, prefixed by name).
func newSharedProgress(o *Options, name string, p *mpb.Progress) *progress {
	return &progress{o: o, pod: name, p: p, shared: true, prefix: name + ": "}
}

// update shows st (a status of the request being waited for).
func (pr *progress) update(st status.Status) {
	pr.files = st.Files
	switch {
	case pr.o.Output == "json":
	case pr.p != nil:
		pr.draw(st)
	default:
		line := fmt.Sprintf("%s%s: %d files, %s", pr.prefix, st.Phase, st.Files, size(st.Bytes))
		if st.ExpectedBytes > 0 {
			line += " of " + size(st.ExpectedBytes)
		}
		if line != pr.shown && time.Since(pr.last) >= time.Second {
			fmt.Fprintln(pr.o.Err, line)
			pr.shown, pr.last = line, time.Now()
		}
	}
}

func (pr *progress) draw(st status.Status) {
	if st.Phase != status.Running || (pr.bar == nil && st.Bytes == 0 && st.ExpectedBytes == 0) {
		return // nothing moved yet: the first progress write says whether the size is known
	}
	if pr.bar == nil {
		files := decor.Any(func(decor.Statistics) string { return fmt.Sprintf("  %d files", pr.files) }, decor.WCSyncSpaceR)
		if st.ExpectedBytes > 0 {
			pr.bar = pr.p.New(st.ExpectedBytes, mpb.BarStyle(),
				mpb.PrependDecorators(decor.Name(pr.pod+" ", decor.WCSyncSpaceR), decor.Counters(decor.SizeB1024(0), "% .1f / % .1f")),
				mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WCSyncSpace), files))
		} else {
			pr.bar = pr.p.New(0, mpb.SpinnerStyle(),
				mpb.PrependDecorators(decor.Name(pr.pod+" ", decor.WCSyncSpaceR), decor.Current(decor.SizeB1024(0), "% .1f")),
				mpb.AppendDecorators(files, decor.AverageSpeed(decor.SizeB1024(0), " % .1f")))
		}
	}
	if st.ExpectedBytes > 0 {
		pr.bar.SetTotal(st.ExpectedBytes, false)
	}
	pr.bar.SetCurrent(st.Bytes)
}

// done completes the bar with the final status.
func (pr *progress) done(st status.Status) {
	pr.files = st.Files
	if pr.bar != nil {
		if st.Phase == status.Succeeded {
			pr.bar.SetCurrent(st.Bytes)
			pr.bar.SetTotal(st.Bytes, true)
		} else {
			pr.bar.Abort(false)
		}
	}
}

func (pr *progress) close() {
	if pr.p != nil {
		if pr.bar != nil && !pr.bar.Completed() {
			pr.bar.Abort(false)
		}
		if !pr.shared {
			pr.p.Wait()
		}
	}
}

// size is n bytes for humans (KiB, MiB, GiB).
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
