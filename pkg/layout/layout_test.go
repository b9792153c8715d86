package layout

import (
	"path"
	"strings"
	"testing"
)

func mustNew(t testing.TB) Layout {
	t.Helper()
	l, err := New("/collect", "shop", "web-0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestPaths(t *testing.T) {
	t.Parallel()
	l := mustNew(t)
	id := "20261123T120000Z-0123abcd"
	if got, _ := l.Collection(id); got != "/collect/shop/web-0/"+id {
		t.Errorf("Collection = %q", got)
	}
	if got, _ := l.Staging(id); got != "/collect/shop/web-0/.partial/"+id {
		t.Errorf("Staging = %q", got)
	}
	if got, _ := l.Entry(id, "app", "/var/log/x.log"); got != id+"/app/var/log/x.log" {
		t.Errorf("Entry = %q", got)
	}
	f, c, err := l.FollowFile("app", "/var/log/x.log")
	if err != nil || f != "/collect/shop/web-0/follow/app/var/log/x.log" || c != "/collect/shop/web-0/follow/.checkpoints/app/var/log/x.log" {
		t.Errorf("FollowFile = %q %q %v", f, c, err)
	}
}

func TestRefused(t *testing.T) {
	t.Parallel()
	l := mustNew(t)
	id := "20261123T120000Z-0123abcd"
	for _, tc := range []struct {
		name string
		err  func() error
	}{
		{"dotdot follow", func() error { _, _, err := l.FollowFile("app", "/tmp/../../../../x"); return err }},
		{"dot follow", func() error { _, _, err := l.FollowFile("app", "/tmp/./x"); return err }},
		{"relative follow", func() error { _, _, err := l.FollowFile("app", "tmp/x"); return err }},
		{"double slash", func() error { _, _, err := l.FollowFile("app", "/tmp//x"); return err }},
		{"nul", func() error { _, _, err := l.FollowFile("app", "/tmp/a\x00b"); return err }},
		{"container dots", func() error { _, _, err := l.FollowFile("..", "/tmp/x"); return err }},
		{"container checkpoints", func() error { _, _, err := l.FollowFile(".checkpoints", "/tmp/x"); return err }},
		{"bad id", func() error { _, err := l.Collection("../../etc"); return err }},
		{"entry dotdot", func() error { _, err := l.Entry(id, "app", "/a/../../b"); return err }},
		{"long", func() error { _, _, err := l.FollowFile("app", "/"+strings.Repeat("a/", 3000)+"x"); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.err() == nil {
				t.Fatal("accepted")
			}
		})
	}
	for _, bad := range [][3]string{{"collect", "ns", "p"}, {"/collect", "../x", "p"}, {"/collect", "ns", ".."}, {"/c/../d", "ns", "p"}} {
		if _, err := New(bad[0], bad[1], bad[2]); err == nil {
			t.Errorf("New%q accepted", bad)
		}
	}
}

// FuzzLayout: whatever the inputs, an accepted path lies strictly below the pod's root.
func FuzzLayout(f *testing.F) {
	for _, s := range []string{"/var/log/x", "/tmp/../..", "/./", "//", "/a\x00", "/a\nb", "/" + strings.Repeat("x", 300), "/.*/..", "/.checkpoints"} {
		f.Add("app", s, "20261123T120000Z-0123abcd")
	}
	f.Add("..", "/x", "../../x")
	f.Fuzz(func(t *testing.T, container, src, id string) {
		l, err := New("/collect", "ns", "pod")
		if err != nil {
			t.Fatal(err)
		}
		root := l.Root() + "/"
		check := func(p string) {
			if !strings.HasPrefix(p, root) || path.Clean(p) != p || strings.ContainsRune(p, 0) {
				t.Fatalf("escaped: %q (container %q src %q id %q)", p, container, src, id)
			}
		}
		if file, cp, err := l.FollowFile(container, src); err == nil {
			check(file)
			check(cp)
			if strings.HasPrefix(file, root+CheckpointName) || !strings.HasPrefix(cp, root+FollowName+"/"+CheckpointName+"/") {
				t.Fatalf("follow file and checkpoint trees overlap: %q %q", file, cp)
			}
		}
		if e, err := l.Entry(id, container, src); err == nil {
			check(path.Join(l.StagingRoot(), e))
			if !strings.HasPrefix(e, id+"/"+container+"/") {
				t.Fatalf("entry %q outside its collection", e)
			}
		}
		if c, err := l.Collection(id); err == nil {
			check(c)
		}
	})
}

func TestRetiredFollowFile(t *testing.T) {
	t.Parallel()
	l, err := New("/collect", "ns", "pod")
	if err != nil {
		t.Fatal(err)
	}
	f, c, err := l.RetiredFollowFile("app", "/var/log/a.log", "11111111-2222-3333-4444-555555555555")
	if err != nil || f != "/collect/ns/pod/follow/app/var/log/a.log.pod-11111111-2222-3333-4444-555555555555" ||
		c != "/collect/ns/pod/follow/.checkpoints/app/var/log/a.log.pod-11111111-2222-3333-4444-555555555555" {
		t.Fatalf("%q %q %v", f, c, err)
	}
	for _, uid := range []string{"", "../../x", "11111111-2222-3333-4444-55555555555/"} {
		if _, _, err := l.RetiredFollowFile("app", "/var/log/a.log", uid); err == nil {
			t.Errorf("uid %q accepted", uid)
		}
	}
}
