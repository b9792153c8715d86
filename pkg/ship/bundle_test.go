package ship

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/verify"
)

// TestBundles: small files go into bundle objects (a big one stays an object of its own),
// each placed in the manifest and the signed record by bundle and offset; the one verifier
// reads them back from the bucket, signed or not, and a newer version of a bundle over the
// recorded one names the file it changes while the recorded bytes still verify.
func TestBundles(t *testing.T) {
	t.Parallel()
	for _, signed := range []bool{true, false} {
		t.Run(fmt.Sprintf("signed=%v", signed), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "gnu")
			sums := map[string]string{}
			for i := range 23 {
				name := fmt.Sprintf("var/log/s/f%02d", i)
				sums["/"+name] = f.write(t, name, random(i*150+i%2)) // 0 to 3,301 bytes
			}
			sums["/var/log/s/big"] = f.write(t, "var/log/s/big", random(9000))
			if err := os.Link(filepath.Join(f.root, "var/log/s/f05"), filepath.Join(f.root, "var/log/s/link")); err != nil {
				t.Fatal(err)
			}
			sums["/var/log/s/link"] = sums["/var/log/s/f05"]
			f.shipper.Bundles = &BundleOptions{MemberMaxBytes: 4096, MaxBytes: 16 << 10, MaxMembers: 5, InFlight: 2}
			j := f.job("/var/log/s")
			mb := &memBucket{}
			j.Bucket, j.NoPod = mb, true
			var keys verify.Keys
			if signed {
				key, _, err := custody.GenerateKey()
				if err != nil {
					t.Fatal(err)
				}
				j.Custody, keys = key, verify.Keys{Trust: custody.Trust{Keys: []*custody.PublicKey{key.Public()}}, Required: true}
			}
			if _, err := f.shipper.Run(t.Context(), j); err != nil {
				t.Fatal(err)
			}
			prefix := "ns/src/" + j.Header.Collection + "/"
			var m manifest.Manifest
			if err := json.Unmarshal(mb.objects[prefix+"manifest.json"], &m); err != nil {
				t.Fatal(err)
			}
			if len(m.Bundles) < 5 || len(m.Files) != 25 {
				t.Fatalf("%d bundles and %d files in the manifest, want at least 5 (23 small files, 5 a bundle) and 25", len(m.Bundles), len(m.Files))
			}
			for _, file := range m.Files {
				if file.Path == "/var/log/s/big" {
					if file.Bundle != "" || mb.objects[prefix+"app/var/log/s/big"] == nil {
						t.Errorf("the big file is not an object of its own (bundle %q)", file.Bundle)
					}
					continue
				}
				if _, alone := mb.objects[prefix+"app"+file.Path]; alone || file.Bundle == "" {
					t.Errorf("%s: an object of its own (%v), bundle %q", file.Path, alone, file.Bundle)
					continue
				}
				b := mb.objects[prefix+file.Bundle]
				if got := sha(b[file.Offset : file.Offset+file.Size]); got != sums[file.Path] || file.SHA256 != got {
					t.Errorf("%s: bytes at %s+%d have sha256 %s, manifest %s, source %s", file.Path, file.Bundle, file.Offset, got, file.SHA256, sums[file.Path])
				}
			}
			if len(mb.copies) != 0 {
				t.Errorf("a bundled file's hard link copied an object: %v", mb.copies)
			}

			versions, open := bucketOf(mb, prefix)
			check := func(versions []verify.Version, open verify.Opener) verify.Verdict {
				c := verify.Open(t.Context(), keys, verify.Identity{Collection: j.Header.Collection}, "s3://b/"+prefix, mb.objects[prefix+custody.FileName])
				c.Manifest(mb.objects[prefix+"manifest.json"])
				if c.Failed() {
					t.Fatalf("the record or manifest failed: %+v", c.Finish())
				}
				if err := c.Bucket(t.Context(), versions, open, verify.NewDiscard()); err != nil {
					t.Fatal(err)
				}
				return c.Finish()
			}
			if v := check(versions, open); !v.OK() || v.Files != 25 {
				t.Fatalf("verify: %v (%d files)", v.Err(), v.Files)
			}
			if !signed {
				return
			}
			// A new version of the first bundle, one byte of f03 changed: the record names the
			// version written, so the file still verifies, and the tampering names the file.
			var f03 manifest.File
			for _, file := range m.Files {
				if file.Path == "/var/log/s/f03" {
					f03 = file
				}
			}
			bad := bytes.Clone(mb.objects[prefix+f03.Bundle])
			bad[f03.Offset+7] ^= 1
			for i := range versions {
				if versions[i].Name == f03.Bundle {
					versions[i].Latest = false
				}
			}
			versions = append([]verify.Version{{Name: f03.Bundle, VersionID: "evil", Latest: true, Size: int64(len(bad))}}, versions...)
			tampered := func(ctx context.Context, name, version string) (io.ReadCloser, error) {
				if version == "evil" {
					return io.NopCloser(bytes.NewReader(bad)), nil
				}
				return open(ctx, name, version)
			}
			v := check(versions, tampered)
			if v.Files != 25 || len(v.Mismatched)+len(v.Missing) != 0 {
				t.Errorf("the recorded version no longer verifies: %v", v.Err())
			}
			if !strings.Contains(strings.Join(v.Tampered, "\n"), "/var/log/s/f03 (in "+f03.Bundle+"): changed in version evil") {
				t.Errorf("tampering does not name the changed file: %q", v.Tampered)
			}
		})
	}
}

// bucketOf is a listing of every object below prefix (one version each), and their reader.
func bucketOf(mb *memBucket, prefix string) ([]verify.Version, verify.Opener) {
	var vs []verify.Version
	for key, b := range mb.objects {
		if name, ok := strings.CutPrefix(key, prefix); ok {
			vs = append(vs, verify.Version{Name: name, VersionID: mb.Version(key), Latest: true, Size: int64(len(b))})
		}
	}
	return vs, func(_ context.Context, name, version string) (io.ReadCloser, error) {
		if version != "" && version != mb.Version(prefix+name) {
			return nil, fmt.Errorf("no version %s of %s", version, name)
		}
		return io.NopCloser(bytes.NewReader(mb.objects[prefix+name])), nil
	}
}
