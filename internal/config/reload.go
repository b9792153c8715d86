package config

import (
	"context"
	"path/filepath"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
)

// Reload calls apply with freshly loaded Options whenever the config file changes, until ctx
// ends (the hot reload of the policy). It observes the file's directory, because a mounted ConfigMap changes by swapping a
// symlink, not by writing the file. Invalid new contents are logged, handed to refused and
// otherwise ignored.
func (l *Loader) Reload(ctx context.Context, file string, apply func(Options), refused func(error)) error {
	log := logr.FromContextOrDiscard(ctx)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(file)); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			log.Error(err, "watching config file")
		case ev := <-w.Events:
			// Only the file itself, or a ConfigMap's "..data" symlink swap: other files in the
			// directory (an editor's temporary file) say nothing about the config.
			if ev.Op == fsnotify.Chmod || (filepath.Base(ev.Name) != filepath.Base(file) && filepath.Base(ev.Name) != "..data") {
				continue
			}
			o, err := l.Load()
			if err != nil {
				log.Error(err, "config file changed but is invalid; keeping the previous policy", "file", file)
				refused(err)
				continue
			}
			apply(o)
		}
	}
}
