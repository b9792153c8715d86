package follow

import (
	"context"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/metrics"
)

// Sidecar follows files of its own pod (sidecar mode): a change that inotify reports is
// shipped after Settle, and every Interval a rescan ships whatever inotify missed (it drops
// events on overflow and on some filesystems).
type Sidecar struct {
	Set *Set
	// Choose returns the analysis pod to write to.
	Choose func(ctx context.Context) (exec.Target, error)
	// Interval is the rescan period; Settle the delay that coalesces a burst of changes.
	Interval, Settle time.Duration
	// Grace bounds the last shipment after ctx is cancelled (the pod is stopping).
	Grace   time.Duration
	Metrics *metrics.Metrics
	// Labels are podcopy_follow_lag_bytes' namespace, pod and container.
	Labels [3]string
}

// Run ships until ctx is cancelled, then ships once more (within Grace) and returns.
func (s *Sidecar) Run(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer func() { _ = w.Close() }()
	s.watch(log, w)
	rescan := time.NewTicker(s.Interval)
	defer rescan.Stop()
	settle := time.NewTimer(0) // ship at once on start
	defer settle.Stop()
	scheduled := true
	schedule := func() {
		if !scheduled {
			settle.Reset(s.Settle)
			scheduled = true
		}
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.Grace)
			s.tick(fctx, log)
			cancel()
			log.Info("sidecar stopped after a last shipment")
			return nil
		case ev, ok := <-w.Events:
			if ok && ev.Op != fsnotify.Chmod {
				schedule()
			}
		case err, ok := <-w.Errors:
			if ok {
				log.Info("inotify error; the rescan covers it", "error", err.Error())
				schedule()
			}
		case <-settle.C:
			scheduled = false
			s.tick(ctx, log)
		case <-rescan.C:
			s.watch(log, w) // directories that did not exist yet
			s.tick(ctx, log)
		}
	}
}

// watch adds the followed files' directories (renames and re-creations happen there).
func (s *Sidecar) watch(log logr.Logger, w *fsnotify.Watcher) {
	have := map[string]bool{}
	for _, d := range w.WatchList() {
		have[d] = true
	}
	for _, p := range s.Set.Paths {
		dir := filepath.Dir(p)
		if have[dir] {
			continue
		}
		if err := w.Add(dir); err != nil {
			log.V(1).Info("cannot watch yet; rescanning", "dir", dir, "error", err.Error())
			continue
		}
		have[dir] = true
	}
}

func (s *Sidecar) tick(ctx context.Context, log logr.Logger) {
	dst, err := s.Choose(ctx)
	if err != nil {
		log.Error(err, "no destination; will retry")
		return
	}
	reports, err := s.Set.Tick(ctx, dst)
	if err != nil {
		log.Error(err, "following globs")
	}
	for _, f := range reports {
		rep, err := f.Report, f.Err
		rep.Record(s.Metrics, s.Labels[0], s.Labels[1], s.Labels[2], f.Path)
		if f.Dropped {
			s.Metrics.FollowLag.DeleteLabelValues(s.Labels[0], s.Labels[1], s.Labels[2], f.Path)
			log.Info("file no longer matches; finished and dropped", "path", f.Path)
		}
		normal, warning := rep.Events(f.Path)
		if normal != "" {
			log.Info(normal, "path", f.Path)
		}
		if warning != "" {
			log.Error(nil, warning, "path", f.Path, "lostBytes", rep.Lost)
		}
		if err != nil {
			log.Error(err, "shipping failed; the destination's checkpoint says where to resume", "path", f.Path)
		} else if rep.Shipped > 0 {
			log.V(1).Info("shipped", "path", f.Path, "bytes", rep.Shipped, "destBytes", rep.DestSize)
		}
	}
}
