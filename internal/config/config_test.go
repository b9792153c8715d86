package config

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/podcopy/podcopy/internal/testkit/golden"
)

func load(t *testing.T, file string, args ...string) (Options, error) {
	t.Helper()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	l := NewLoader(fs)
	if err := fs.Parse(append([]string{"--config", file}, args...)); err != nil {
		t.Fatal(err)
	}
	return l.Load()
}

func TestDefaults(t *testing.T) {
	o, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if o.Destination.Dir != "/collect" || o.Concurrency != 4 || o.Listen != ":9090" || o.Exec.Transport != "auto" ||
		o.Policy.MaxFiles != 10000 || len(o.Policy.DenyPaths) != 6 || o.Destination.Namespace != "podcopy" {
		t.Fatalf("%+v", o)
	}
	lim, _ := o.LimitsValue()
	if lim.MaxBytes != 1<<30 {
		t.Fatalf("maxBytes %d", lim.MaxBytes)
	}
}

func TestFileEnvFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("concurrency: 2\ndestination:\n  dir: /data\npolicy:\n  allowPaths: [\"/srv/**\"]\n  maxBytes: 10Mi\nlog:\n  format: console\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PODCOPY_DESTINATION_NAMESPACE", "forensics")
	t.Setenv("PODCOPY_CONCURRENCY", "3")
	o, err := load(t, file, "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	if o.Concurrency != 3 || o.Destination.Dir != "/data" || o.Destination.Namespace != "forensics" ||
		o.Log.Format != "console" || o.Log.Level != "debug" || o.Policy.AllowPaths[0] != "/srv/**" {
		t.Fatalf("%+v", o)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	tests := []struct{ yaml, want string }{
		{"concurrency: 0\n", "concurrency must be at least 1"},
		{"compression: zstd\n", "compression \"zstd\""},
		{"exec:\n  transport: carrier-pigeon\n", "exec.transport"},
		{"policy:\n  maxBytes: lots\n", "policy.maxBytes"},
		{"policy:\n  allowPaths: [\"relative/**\"]\n", "absolute"},
		{"destination:\n  selector: \"a=(\"\n", "destination.selector"},
		{"log:\n  level: loud\n", "log.level"},
	}
	for i, tt := range tests {
		file := filepath.Join(dir, "c"+string(rune('a'+i))+".yaml")
		if err := os.WriteFile(file, []byte(tt.yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := load(t, file); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want %q", tt.yaml, err, tt.want)
		}
	}
	for _, c := range []string{"none", "gzip", "auto"} {
		file := filepath.Join(dir, c+".yaml")
		if err := os.WriteFile(file, []byte("compression: "+c+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if o, err := load(t, file); err != nil || o.Compression != c {
			t.Errorf("compression %s: %v, %+v", c, err, o.Compression)
		}
	}
	if _, err := load(t, filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("a missing explicit config file was accepted")
	}
}

func TestWatchAppliesValidChanges(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte("policy:\n  allowPaths: [\"/a/**\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	l := NewLoader(fs)
	if err := fs.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Load(); err != nil {
		t.Fatal(err)
	}
	got := make(chan []string, 10)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	refused := make(chan error, 10)
	go func() {
		done <- l.Reload(ctx, file, func(o Options) { got <- o.Policy.AllowPaths }, func(err error) { refused <- err })
	}()
	// An invalid file is ignored; the next valid one applies. Write until the watcher reacts
	// (it may not be watching yet when the first write lands).
	replace := func(content string) {
		t.Helper()
		tmp := filepath.Join(dir, ".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	replace("policy:\n  allowPaths: [\"relative\"]\n")
	for {
		replace("policy:\n  allowPaths: [\"/b/**\"]\n")
		select {
		case p := <-got:
			if p[0] != "/b/**" {
				t.Fatalf("applied %v", p)
			}
			// The watcher runs now: an invalid file is refused (podcopy_config_reloads_total
			// counts it), and nothing is applied.
			// Earlier writes of the same valid file may still be queued in the watcher (each
			// rename is an event) and apply "/b/**" again; only the invalid content must never apply.
			// The first invalid write was processed before "/b/**" applied (events come in order):
			// a refusal it left is not the one this waits for.
		drain:
			for {
				select {
				case err := <-refused:
					t.Logf("the first invalid write was refused: %v", err)
				default:
					break drain
				}
			}
			replace("policy:\n  allowPaths: [\"relative\"]\n")
			deadline := time.After(10 * time.Second)
		wait:
			for {
				select {
				case err := <-refused:
					if !strings.Contains(err.Error(), "relative") {
						t.Errorf("refused with %v", err)
					}
					break wait
				case p := <-got:
					if p[0] != "/b/**" {
						t.Fatalf("an invalid file was applied: %v", p)
					}
				case <-deadline:
					t.Fatal("an invalid file was not refused")
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestShellConfig(t *testing.T) {
	t.Setenv("PODCOPY_SHELL_ENABLED", "true")
	t.Setenv("PODCOPY_SHELL_LISTEN", "127.0.0.1:8081")
	o, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if !o.Shell.Enabled || o.Shell.Listen != "127.0.0.1:8081" || o.Shell.MaxSessions != 20 || o.Shell.MaxSessionsPerUser != 3 ||
		o.Shell.IdleTimeout != 30*time.Minute || o.Debug.Pprof {
		t.Fatalf("%+v %+v", o.Shell, o.Debug)
	}
}

func TestSidecarMode(t *testing.T) {
	o, err := load(t, "", "--mode=sidecar")
	if err != nil || o.Mode != ModeSidecar {
		t.Fatalf("%+v %v", o, err)
	}
	if _, err := load(t, "", "--mode=everything"); err == nil || !strings.Contains(err.Error(), `mode "everything" is unknown`) {
		t.Errorf("--mode=everything: %v", err)
	}
}

// TestDefaultsGolden: every default, as the agent loads it with no file, flag or
// environment, is the golden file (SPEC §5's table; `go test -update` after an intended
// change).
func TestDefaultsGolden(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	o, err := load(t, "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.MarshalIndent(o, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "testdata/defaults.golden.json", append(got, '\n'))
}
