// Command testapp is the one binary of the e2e suite's distroless image (no shell, no tar):
// it lays out files to collect, then writes /var/log/app/app.log the way the suite's shell
// writer does (20 lines a second; touch /tmp/rotate renames it away, touch /tmp/stop ends
// it). As "testapp touch|test|cat|fill ARGS" it stands in for the tools the suite would
// otherwise exec in the container.
package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/podcopy/podcopy/internal/testkit/hostile"
)

const pad = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz"

func main() {
	if filepath.Base(os.Args[0]) == "tar" {
		os.Exit(hostileTar(os.Args[1:]))
	}
	if len(os.Args) > 1 {
		if err := tool(os.Args[1], os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "testapp:", err)
			os.Exit(1)
		}
		return
	}
	if err := layout(); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	if err := writer(); err != nil {
		fmt.Fprintln(os.Stderr, "testapp:", err)
		os.Exit(1)
	}
	for {
		time.Sleep(time.Hour) // stay, like the suite's other pods
	}
}

// hostileTar stands in for a compromised image's tar (installed as /bin/tar in a busybox
// container by the e2e suite): whatever it is asked to archive, it sends the hostile archive
// named by $HOSTILE (package hostile) for /var/log/app; the ancestors check gets an empty
// archive.
func hostileTar(args []string) int {
	if slices.Contains(args, "--no-recursion") {
		_, _ = os.Stdout.Write(make([]byte, 1024))
		return 0
	}
	if err := hostile.Write(os.Stdout, os.Getenv("HOSTILE"), "/var/log/app"); err != nil {
		fmt.Fprintln(os.Stderr, "tar:", err)
		return 1
	}
	return 0
}

func tool(name string, args []string) error {
	switch name {
	case "install": // install DST: copy this binary to DST (the e2e suite's hostile tar)
		self, err := os.ReadFile("/proc/self/exe")
		if err != nil {
			return err
		}
		return os.WriteFile(args[0], self, 0o755)
	case "touch":
		return os.WriteFile(args[0], nil, 0o644)
	case "test": // test -f PATH
		if _, err := os.Stat(args[len(args)-1]); err != nil {
			os.Exit(1)
		}
		return nil
	case "fill": // fill PATH MiB: pseudo-random bytes, for throughput measurements
		mib, err := strconv.Atoi(args[1])
		if err != nil {
			return err
		}
		f, err := os.Create(args[0])
		if err != nil {
			return err
		}
		rng := rand.New(rand.NewPCG(3, 4))
		buf := make([]byte, 1<<20)
		for range mib {
			for i := 0; i < len(buf); i += 8 {
				binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
			}
			if _, err := f.Write(buf); err != nil {
				return err
			}
		}
		return f.Close()
	case "cat":
		for _, a := range args {
			f, err := os.Open(a)
			if err != nil {
				return err
			}
			_, err = io.Copy(os.Stdout, f)
			_ = f.Close()
			if err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("unknown tool " + name)
}

// layout writes the files the suite collects: a 3 MiB file, a directory tree, files for a
// glob, and a symlink to /etc inside the directory (never to be followed).
func layout() error {
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 3<<20+5)
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	files := map[string][]byte{
		"/var/log/data/one.bin":       big,
		"/var/log/data/dir/a.txt":     []byte("a\n"),
		"/var/log/data/dir/sub/b.txt": []byte("b\n"),
		"/var/log/data/g-1.log":       []byte("glob one\n"),
		"/var/log/data/g-2.log":       []byte("glob two\n"),
	}
	for name, data := range files {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			return err
		}
	}
	return os.Symlink("/etc", "/var/log/data/dir/etc")
}

func writer() error {
	if err := os.MkdirAll("/var/log/app", 0o755); err != nil {
		return err
	}
	open := func() (*os.File, error) {
		return os.OpenFile("/var/log/app/app.log", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	}
	f, err := open()
	if err != nil {
		return err
	}
	go func() {
		n := 0
		for !exists("/tmp/stop") {
			n++
			fmt.Fprintf(f, "line %d %s\n", n, pad)
			if exists("/tmp/rotate") {
				_ = os.Remove("/tmp/rotate")
				_ = os.Rename("/var/log/app/app.log", "/var/log/app/app.log.1")
				for range 5 {
					n++
					fmt.Fprintf(f, "line %d late %s\n", n, pad)
				}
				_ = f.Close()
				if f, err = open(); err != nil {
					panic(err)
				}
				_ = os.WriteFile("/tmp/rotated", nil, 0o644)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = f.Close()
		_ = os.WriteFile("/tmp/stopped", nil, 0o644)
	}()
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
