package rootfs

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Credentials are a process's user and groups.
type Credentials struct {
	UID, GID int
	Groups   []int
}

// ProcessCredentials reads the effective user, group and supplementary groups of pid from
// /proc/<pid>/status (readable without any access to the process itself).
func ProcessCredentials(pid int) (Credentials, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Credentials{}, err
	}
	defer func() { _ = f.Close() }()
	var c Credentials
	seen := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(value)
		switch key {
		case "Uid", "Gid":
			if len(fields) < 2 {
				return c, fmt.Errorf("/proc/%d/status: malformed %s line", pid, key)
			}
			id, err := strconv.Atoi(fields[1]) // real, effective, saved, fs: the effective one
			if err != nil {
				return c, err
			}
			if key == "Uid" {
				c.UID = id
			} else {
				c.GID = id
			}
			seen++
		case "Groups":
			for _, g := range fields {
				id, err := strconv.Atoi(g)
				if err != nil {
					return c, err
				}
				c.Groups = append(c.Groups, id)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if seen != 2 {
		return c, fmt.Errorf("/proc/%d/status has no Uid or Gid line", pid)
	}
	return c, nil
}

// OpenProcessRoot opens /proc/<pid>/root, the root directory of the container pid runs in,
// as that process's own user: the kernel lets a process of the same user (and no more
// capabilities) open it, and the helper then reads exactly what the container's user could.
// Running as root, the helper first becomes that user (setgroups, setgid, setuid: root in a
// container holds CAP_SETUID and CAP_SETGID by default); running as another user, it cannot,
// and the error says which users differ.
func OpenProcessRoot(pid int) (*Root, error) {
	target, err := ProcessCredentials(pid)
	if err != nil {
		return nil, fmt.Errorf("reading the target process's user: %w", err)
	}
	if euid := os.Geteuid(); euid == 0 && target.UID != 0 {
		if err := become(target); err != nil {
			return nil, fmt.Errorf("becoming the target's user %d:%d: %w", target.UID, target.GID, err)
		}
	}
	r, err := Open(fmt.Sprintf("/proc/%d/root", pid))
	if err != nil && (errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EPERM)) {
		return nil, fmt.Errorf("%w: the helper runs as uid %d, the target process %d as uid %d; the kernel lets only the same user with no fewer capabilities read another process's root (run the helper as the target's user, see README: Distroless)",
			err, os.Geteuid(), pid, target.UID)
	}
	return r, err
}

// become switches every thread of this process to c's user and groups for good.
func become(c Credentials) error {
	groups := c.Groups
	if len(groups) == 0 {
		groups = []int{c.GID}
	}
	if err := syscall.Setgroups(groups); err != nil {
		return err
	}
	if err := syscall.Setresgid(c.GID, c.GID, c.GID); err != nil {
		return err
	}
	return syscall.Setresuid(c.UID, c.UID, c.UID)
}
