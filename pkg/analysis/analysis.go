// Package analysis owns every command podcopy runs in an analysis pod: publishing a
// collection, keeping its staging directory alive or removing it, the janitor's sweep,
// retention and quota measurement, the followed files' checkpoints, and reading evidence
// back. No other package names a command for an analysis pod; they call a Pod.
//
// The analysis pod is a container podcopy does not build (busybox or any image with a POSIX
// shell, tar, find and coreutils), so every command here is either a fixed binary whose
// operands follow "--", or "sh -c" with one of the shell programs embedded from scripts/
// (checked by shellcheck). Paths and everything else the agent passes reach them only as
// positional arguments, never as shell code.
package analysis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/layout"
)

var (
	//go:embed scripts/publish.sh
	publishScript string
	//go:embed scripts/stale.sh
	staleScript string
	//go:embed scripts/usage.sh
	usageScript string
	//go:embed scripts/collections.sh
	collectionsScript string
	//go:embed scripts/read.sh
	readScript string
	//go:embed scripts/reserve.sh
	reserveScript string
	// probeScript prints the size of the followed file $1 (0 when absent) on one line and
	// the checkpoint file $2 (or "none") on the next.
	//
	//go:embed scripts/probe.sh
	probeScript string
	// appendScript appends its stdin to the followed file $1. First it records in the
	// checkpoint file $2 the segment about to be appended: the state line $3 followed by
	// the file's current size. Whatever part of the segment then reaches the file, its size
	// says exactly how far the source was shipped. It prints the file's size before and
	// after the append: the bytes that landed, which is not always what was sent (the
	// container runtime can drop the tail of a short stdin that is closed at once: measured
	// with containerd 2.4.2).
	//
	//go:embed scripts/append.sh
	appendScript string
	// retireScript renames an earlier pod's harvested file $1 and checkpoint $2 to $3 and
	// $4, refusing to overwrite.
	//
	//go:embed scripts/retire.sh
	retireScript string
)

// Pod runs podcopy's commands in one analysis pod through Exec. Deadlines and output bounds
// are the caller's: every method takes a context and writes to the writers it is given.
type Pod struct {
	Exec   exec.Executor
	Target exec.Target
}

// String names the analysis pod (namespace/pod[/container]).
func (p Pod) String() string { return p.Target.String() }

func (p Pod) run(ctx context.Context, cmd []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return p.Exec.Exec(ctx, exec.Request{Target: p.Target, Command: cmd, Stdin: stdin, Stdout: stdout, Stderr: stderr})
}

func script(text, argv0 string, args ...string) []string {
	return append([]string{"sh", "-c", text, argv0}, args...)
}

// Publishing.

// Publish names one collection's publication: the archive on stdin is extracted below
// StagingRoot (its top directory is ID) and renamed to Final once complete.
type Publish struct {
	StagingRoot, ID, Final string
	// Gzip: the archive is gzip-compressed.
	Gzip bool
	// Signed: the collection is published only if the archive holds its custody record.
	Signed bool
}

// CompleteMarker is the last line Publish prints once the collection is under its final
// name; FailedPrefix starts the one line it prints the moment it fails (its exit status
// reaches the agent only once stdin is closed).
func CompleteMarker(id string) string { return "podcopy-complete " + id + "\n" }

// FailedPrefix starts the line Publish prints when it fails, followed by the reason.
const FailedPrefix = "podcopy-failed "

// Publish extracts the archive read from stdin as pub says, writing its progress lines
// (CompleteMarker, FailedPrefix) to stdout.
func (p Pod) Publish(ctx context.Context, pub Publish, stdin io.Reader, stdout io.Writer) error {
	codec := "none"
	if pub.Gzip {
		codec = "gzip"
	}
	args := []string{pub.StagingRoot, pub.ID, pub.Final, codec}
	if pub.Signed {
		args = append(args, layout.CustodyName)
	}
	return p.run(ctx, script(publishScript, "podcopy-publish", args...), stdin, stdout, nil)
}

// Heartbeat refreshes the modification time of a staging directory in flight (never
// creating it), so the stale sweep, which decides by that time, never removes a live
// collection however slowly its files arrive.
func (p Pod) Heartbeat(ctx context.Context, staging string) error {
	return p.run(ctx, []string{"touch", "-c", "--", staging}, nil, nil, nil)
}

// Discard removes a staging directory that did not complete.
func (p Pod) Discard(ctx context.Context, staging string) error {
	return p.run(ctx, []string{"rm", "-rf", "--", staging}, nil, nil, nil)
}

// The janitor: stale staging, retention, quota.

// SweepStale removes the staging directories (layout.StagingName) below dir not modified
// for minutes, printing each one removed on a line of stdout. Complete collections are
// never touched.
func (p Pod) SweepStale(ctx context.Context, dir string, minutes int, stdout io.Writer) error {
	return p.run(ctx, script(staleScript, "podcopy-stale", dir, layout.StagingName, strconv.Itoa(minutes)), nil, stdout, nil)
}

// Collections lists the published collections below dir on stdout, one manifest path a
// line (dir/<ns>/<pod>/<id>/manifest.json); staging and follow files are never listed.
func (p Pod) Collections(ctx context.Context, dir string, stdout io.Writer) error {
	return p.run(ctx, script(collectionsScript, "podcopy-collections", dir), nil, stdout, nil)
}

// Remove removes the directories (published collections past retention) at once.
func (p Pod) Remove(ctx context.Context, dirs []string) error {
	if len(dirs) == 0 {
		return nil
	}
	return p.run(ctx, append([]string{"rm", "-rf", "--"}, dirs...), nil, nil, nil)
}

// Usage is what one source namespace's directory holds in an analysis pod.
type Usage struct {
	Bytes       int64
	Collections int
}

// Usage measures the directory nsDir (one source namespace's): the bytes in use and the
// published collections below it.
func (p Pod) Usage(ctx context.Context, nsDir string) (Usage, error) {
	out := &exec.Output{Max: 256}
	if err := p.run(ctx, script(usageScript, "podcopy-usage", nsDir), nil, out, nil); err != nil {
		return Usage{}, err
	}
	f := strings.Fields(out.String())
	if len(f) != 2 {
		return Usage{}, fmt.Errorf("unexpected output %q", out.String())
	}
	kib, err1 := strconv.ParseInt(f[0], 10, 64)
	n, err2 := strconv.Atoi(f[1])
	if err := errors.Join(err1, err2); err != nil {
		return Usage{}, err
	}
	if kib < 0 || n < 0 {
		return Usage{}, fmt.Errorf("unexpected output %q", out.String())
	}
	return Usage{Bytes: kib << 10, Collections: n}, nil
}

// Reservation asks for part of a namespace's quota before a collection writes.
type Reservation struct {
	// NamespaceDir is the namespace's directory, Ledger its reservations directory, Name
	// this collection's reservation in it (layout.Layout's).
	NamespaceDir, Ledger, Name string
	// Bytes is what the collection asks to hold in all (a later call with more grows it).
	Bytes int64
	// MaxCollections and MaxBytes are the namespace's quota (0: no bound).
	MaxCollections int
	MaxBytes       int64
	// Stale is the age past which a reservation belongs to no live collection.
	Stale time.Duration
}

// Grant is what Reserve answered: the bytes granted (Refused empty), or why none were
// ("collections" or "bytes": that part of the quota is used up). Used and Count are the
// namespace's usage without this reservation.
type Grant struct {
	Bytes   int64
	Refused string
	Used    int64
	Count   int
}

// Reserve takes or grows a reservation, atomically across every agent writing to this
// analysis pod.
func (p Pod) Reserve(ctx context.Context, r Reservation) (Grant, error) {
	out := &exec.Output{Max: 256}
	stale := max(int(r.Stale.Minutes()), 1)
	args := []string{r.NamespaceDir, r.Ledger, r.Name, strconv.FormatInt(r.Bytes, 10),
		strconv.Itoa(r.MaxCollections), strconv.FormatInt(r.MaxBytes, 10), strconv.Itoa(stale)}
	if err := p.run(ctx, script(reserveScript, "podcopy-reserve", args...), nil, out, nil); err != nil {
		return Grant{}, err
	}
	f := strings.Fields(out.String())
	if len(f) != 4 {
		return Grant{}, fmt.Errorf("unexpected output %q", out.String())
	}
	var g Grant
	used, err1 := strconv.ParseInt(f[2], 10, 64)
	count, err2 := strconv.Atoi(f[3])
	var err3 error
	switch {
	case f[0] == "granted":
		g.Bytes, err3 = strconv.ParseInt(f[1], 10, 64)
	case f[0] == "refused" && (f[1] == "collections" || f[1] == "bytes"):
		g.Refused = f[1]
	default:
		err3 = errors.New("unknown answer")
	}
	if err := errors.Join(err1, err2, err3); err != nil || g.Bytes < 0 {
		return Grant{}, fmt.Errorf("unexpected output %q", out.String())
	}
	g.Used, g.Count = used, count
	return g, nil
}

// Release drops a reservation (the collection is published, or gone).
func (p Pod) Release(ctx context.Context, ledger, name string) error {
	return p.run(ctx, []string{"rm", "-f", "--", ledger + "/" + name}, nil, nil, nil)
}

// Followed files.

// Probe prints the size of the followed file (0 when absent) on one line of stdout and
// its checkpoint file (or "none") on the next.
func (p Pod) Probe(ctx context.Context, file, state string, stdout io.Writer) error {
	return p.run(ctx, script(probeScript, "podcopy-follow", file, state), nil, stdout, nil)
}

// Append records stateLine and the file's size in the checkpoint file state, appends
// stdin to file, and prints "BEFORE AFTER" (the file's sizes) on stdout.
func (p Pod) Append(ctx context.Context, file, state, stateLine string, stdin io.Reader, stdout io.Writer) error {
	return p.run(ctx, script(appendScript, "podcopy-follow", file, state, stateLine), stdin, stdout, nil)
}

// Retire renames an earlier pod's followed file and checkpoint to toFile and toState,
// refusing to overwrite; why it refused goes to stderr.
func (p Pod) Retire(ctx context.Context, file, state, toFile, toState string, stderr io.Writer) error {
	return p.run(ctx, script(retireScript, "podcopy-follow", file, state, toFile, toState), nil, nil, stderr)
}

// Reading evidence back.

// ReadFile writes the regular file path to stdout; found is false (and err nil) when
// there is none.
func (p Pod) ReadFile(ctx context.Context, path string, stdout io.Writer) (found bool, err error) {
	err = p.run(ctx, script(readScript, "podcopy-read", path), nil, stdout, io.Discard)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Code == 3 {
		return false, nil
	}
	return err == nil, err
}

// Cat writes the file path to stdout (a missing one is an error).
func (p Pod) Cat(ctx context.Context, path string, stdout io.Writer) error {
	return p.run(ctx, []string{"cat", "--", path}, nil, stdout, nil)
}

// Head writes at most n bytes of the file path to stdout: the command stops reading there.
func (p Pod) Head(ctx context.Context, path string, n int, stdout io.Writer) error {
	return p.run(ctx, []string{"head", "-c", strconv.Itoa(n), "--", path}, nil, stdout, io.Discard)
}

// List writes the names in directory dir to stdout, one a line. A missing directory is an
// *exec.ExitError, as ls reports it.
func (p Pod) List(ctx context.Context, dir string, stdout io.Writer) error {
	return p.run(ctx, []string{"ls", "-1", "--", dir}, nil, stdout, nil)
}

// Archive writes the directory dir as a tar stream (members "./...") to stdout.
func (p Pod) Archive(ctx context.Context, dir string, stdout io.Writer) error {
	return p.run(ctx, []string{"tar", "-c", "-f", "-", "-C", dir, "."}, nil, stdout, nil)
}
