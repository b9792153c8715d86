// Package policy decides which paths inside a container podcopy may read.
package policy

import (
	"fmt"
	"path"
	"strings"

	"github.com/podcopy/podcopy/pkg/pathname"
)

// Policy is a set of allow and deny globs over absolute paths. A path is permitted when it
// matches at least one allow glob and no deny glob. Globs use path.Match syntax per segment,
// plus "**" for any number of segments (including none).
type Policy struct {
	AllowPaths []string `json:"allowPaths"`
	DenyPaths  []string `json:"denyPaths"`
}

// Default returns the policy of SPEC §5.
func Default() Policy {
	return Policy{
		AllowPaths: []string{"/var/log/**", "/tmp/**"},
		DenyPaths:  []string{"/var/run/secrets/**", "/run/secrets/**", "/proc/**", "/sys/**", "/dev/**", "/etc/shadow"},
	}
}

// Validate reports a malformed glob.
func (p Policy) Validate() error {
	for _, list := range [][]string{p.AllowPaths, p.DenyPaths} {
		for _, g := range list {
			if !strings.HasPrefix(g, "/") {
				return fmt.Errorf("policy glob %q must be an absolute path", g)
			}
			if _, err := path.Match(g, ""); err != nil {
				return fmt.Errorf("policy glob %q: %w", g, err)
			}
		}
	}
	return nil
}

// Check returns nil when p is permitted, or an error that names the rule that refused it.
// A name that is not canonical (see pathname.Canonical) is refused, never matched: a glob
// such as "/var/log/**" must not admit "/var/log/../../etc/shadow".
func (p Policy) Check(name string) error {
	if err := pathname.Canonical(name); err != nil {
		return fmt.Errorf("path refused: %w", err)
	}
	for _, g := range p.DenyPaths {
		if Match(g, name) {
			return fmt.Errorf("path %s is denied by policy.denyPaths pattern %s", name, g)
		}
	}
	for _, g := range p.AllowPaths {
		if Match(g, name) {
			return nil
		}
	}
	return fmt.Errorf("path %s is outside policy.allowPaths %v", name, p.AllowPaths)
}

// Match reports whether the absolute path name matches glob, where "**" matches any number
// of whole segments and other segments follow path.Match.
func Match(glob, name string) bool {
	return matchSegments(split(glob), split(name))
}

func split(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

func matchSegments(glob, name []string) bool {
	for len(glob) > 0 {
		if glob[0] == "**" {
			rest := glob[1:]
			for i := 0; i <= len(name); i++ {
				if matchSegments(rest, name[i:]) {
					return true
				}
			}
			return false
		}
		if len(name) == 0 {
			return false
		}
		if ok, err := path.Match(glob[0], name[0]); err != nil || !ok {
			return false
		}
		glob, name = glob[1:], name[1:]
	}
	return len(name) == 0
}
