package policy

import "testing"

func TestCheck(t *testing.T) {
	t.Parallel()
	p := Default()
	tests := []struct {
		path string
		ok   bool
	}{
		{"/var/log/mysql/slow.log", true},
		{"/var/log", true},
		{"/tmp/a/b/c", true},
		{"/etc/passwd", false},
		{"/etc/shadow", false},
		{"/var/run/secrets/kubernetes.io/serviceaccount/token", false},
		{"/proc/1/environ", false},
		{"/var/logs/x", false},
		{"/", false},
		{"/var/log/../../etc/shadow", false},
		{"/var/log/.cache/../../../etc/shadow", false},
		{"/tmp/./x", false},
		{"/var/log//x", false},
		{"/var/log/x/", false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			if err := p.Check(tt.path); (err == nil) != tt.ok {
				t.Fatalf("Check(%q) = %v, want ok=%v", tt.path, err, tt.ok)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		glob, name string
		want       bool
	}{
		{"/var/log/**", "/var/log", true},
		{"/var/log/**", "/var/log/a/b/c.log", true},
		{"/var/**/c.log", "/var/log/a/b/c.log", true},
		{"/var/**/c.log", "/var/c.log", true},
		{"/var/*/c.log", "/var/log/a/c.log", false},
		{"/var/log/*.log", "/var/log/a.log", true},
		{"/var/log/*.log", "/var/log/sub/a.log", false},
		{"/etc/shadow", "/etc/shadow", true},
		{"/etc/shadow", "/etc/shadow-", false},
		{"/[", "/x", false},
	}
	for _, tt := range tests {
		if got := Match(tt.glob, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.glob, tt.name, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Policy{AllowPaths: []string{"var/log"}}).Validate(); err == nil {
		t.Fatal("relative glob accepted")
	}
	if err := (Policy{DenyPaths: []string{"/var/["}}).Validate(); err == nil {
		t.Fatal("malformed glob accepted")
	}
}
