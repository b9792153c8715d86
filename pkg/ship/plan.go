package ship

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/pathname"
)

// maxListBytes bounds what one glob's listing may print.
const maxListBytes = 8 << 20

// plan is what the source tar reads: canonical literal paths, none of them below a symbolic
// link, and what was left out and why.
type plan struct {
	paths   []string
	skipped []manifest.Skipped
	// linked holds requested literal paths that were left out because a directory above
	// them is a symbolic link: they are accounted for, not missing.
	linked map[string]bool
}

// plan expands globs in the container, vets every match, and leaves out every path that
// would be read through a symlinked directory (SPEC §1: the policy applies to what is
// actually read). The checks run in the container just before the read; a container that
// swaps a directory for a link in between can still win that race (see README's threat
// model): the helper source (openat2 RESOLVE_NO_SYMLINKS) is what closes it.
func (s *Shipper) plan(ctx context.Context, job Job) (plan, error) {
	p := plan{linked: map[string]bool{}}
	var paths []string
	for _, pattern := range job.Paths {
		if !pathname.IsGlob(pattern) {
			paths = append(paths, pattern)
			continue
		}
		matches, err := s.list(ctx, job, pattern)
		if err != nil {
			return p, err
		}
		n := 0
		for _, m := range matches {
			if err := pathname.Matches(pattern, m); err != nil {
				p.skipped = append(p.skipped, manifest.Skipped{Path: m, Type: SkipOther, Reason: "glob match refused: " + err.Error()})
				continue
			}
			paths = append(paths, m)
			n++
		}
		if n == 0 {
			return p, permanent("%s: no such file or directory in container %s (nothing matches)", pattern, job.Header.Source.Container)
		}
		if lim := job.Limits.MaxFiles; lim > 0 && len(paths) > lim {
			return p, &LimitError{Reason: fmt.Sprintf("%s matches more than policy.maxFiles=%d paths; narrow the pattern or raise the limit", pattern, lim)}
		}
	}
	slices.Sort(paths)
	paths = Prune(slices.Compact(paths))
	links, err := s.symlinkedDirs(ctx, job, paths)
	if err != nil {
		return p, err
	}
	for _, path := range paths {
		if dir := firstLinked(path, links); dir != "" {
			p.linked[path] = true
			p.skipped = append(p.skipped, manifest.Skipped{Path: path, Type: SkipSymlink,
				Reason: fmt.Sprintf("directory %s is a symbolic link; podcopy does not read through symlinked directories", dir)})
			continue
		}
		p.paths = append(p.paths, path)
	}
	return p, nil
}

func firstLinked(path string, links map[string]bool) string {
	for _, a := range pathname.Ancestors(path) {
		if links[a] {
			return a
		}
	}
	return ""
}

// list runs ListCommand and returns the matches as absolute names (not yet vetted).
func (s *Shipper) list(ctx context.Context, job Job, pattern string) ([]string, error) {
	out := &exec.Output{Max: maxListBytes}
	if err := s.Exec.Exec(ctx, exec.Request{Target: job.Source, Command: job.Reader.ListCommand(pattern), Stdout: out}); err != nil {
		return nil, fmt.Errorf("expanding %s in container %s: %w", pattern, job.Header.Source.Container, err)
	}
	var names []string
	for _, raw := range bytes.Split(out.Bytes(), []byte{0}) {
		if len(raw) == 0 {
			continue
		}
		names = append(names, strings.TrimPrefix(string(raw), "."))
	}
	return names, nil
}

// symlinkedDirs returns which proper ancestors of paths are symbolic links, from the
// container's own tar (only tar is needed).
func (s *Shipper) symlinkedDirs(ctx context.Context, job Job, paths []string) (map[string]bool, error) {
	src := job.Source
	var dirs []string
	for _, p := range paths {
		dirs = append(dirs, pathname.Ancestors(p)...)
	}
	slices.Sort(dirs)
	dirs = slices.Compact(dirs)
	links := map[string]bool{}
	if len(dirs) == 0 {
		return links, nil
	}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := s.Exec.Exec(ctx, exec.Request{Target: src, Command: job.Reader.AncestorsCommand(dirs), Stdout: pw})
		pw.CloseWithError(err) // nil: the reader sees io.EOF
		done <- err
	}()
	tr := tar.NewReader(pr)
	var rerr error
	for {
		hdr, err := tr.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				rerr = err
			}
			break
		}
		name, ok := cleanName(hdr.Name)
		if ok && hdr.Typeflag == tar.TypeSymlink {
			links["/"+name] = true
		}
	}
	if rerr == nil {
		_, rerr = io.Copy(io.Discard, pr) // tar's padding: let it exit
		if errors.Is(rerr, io.EOF) {
			rerr = nil
		}
	}
	pr.CloseWithError(errStopped)
	err := <-done
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit) && exit.Code <= 2:
		// 2: a directory does not exist; the file below it is then reported missing.
	case err != nil:
		return nil, fmt.Errorf("checking the directories of the requested paths in container %s: %w", job.Header.Source.Container, err)
	case rerr != nil:
		return nil, fmt.Errorf("checking the directories of the requested paths in container %s: %w", job.Header.Source.Container, rerr)
	}
	return links, nil
}

var errStopped = errors.New("reader stopped")
