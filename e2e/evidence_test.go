//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/failure"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/status"
)

// evidenceStore is the chart's evidence store (versitygw) as a test reaches it: its
// endpoint on the host network, its CA, and its root credentials.
type evidenceStore struct {
	opts   objstore.ClientOptions
	client *s3.Client
	bucket string
}

func evidence(t *testing.T) evidenceStore {
	t.Helper()
	local(t, "evidence store (its port on this machine)")
	port, err := os.ReadFile(filepath.Join(state, "evidence-port"))
	if err != nil {
		t.Fatalf("the evidence store is not deployed (hack/deploy.sh helm): %v", err)
	}
	creds, err := client.CoreV1().Secrets("podcopy").Get(t.Context(), "podcopy-agent-evidence", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tls, err := client.CoreV1().Secrets("podcopy").Get(t.Context(), "podcopy-agent-evidence-tls", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o := objstore.ClientOptions{Endpoint: "https://127.0.0.1:" + strings.TrimSpace(string(port)), CA: tls.Data["ca.crt"],
		AccessKeyID: string(creds.Data["AWS_ACCESS_KEY_ID"]), SecretAccessKey: string(creds.Data["AWS_SECRET_ACCESS_KEY"])}
	c, err := o.Client(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return evidenceStore{opts: o, client: c, bucket: "evidence"}
}

// env is the plugin's environment for reading the store with the user's own S3 credentials.
func (e evidenceStore) env(t *testing.T) []string {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, e.opts.CA, 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"AWS_ACCESS_KEY_ID=" + e.opts.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + e.opts.SecretAccessKey,
		"AWS_ENDPOINT_URL_S3=" + e.opts.Endpoint, "AWS_CA_BUNDLE=" + ca, "AWS_REGION=us-east-1"}
}

func (e evidenceStore) get(t *testing.T, key string) []byte {
	t.Helper()
	out, err := e.client.GetObject(t.Context(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bigUploadStarted starts the collection of a 300 MiB file from pod big in ns and returns once
// its upload is in flight (the store has read 32 MiB more than before: the file is one
// streamed PUT, which lists no upload); uploads counts the namespace's open multipart
// uploads (-1 when the store does not answer).
func (e evidenceStore) bigUploadStarted(t *testing.T, ns string) (uploads func(context.Context) int) {
	t.Helper()
	sourcePod(t, ns, "big", imageBusybox, "mkdir -p /var/log && head -c 314572800 /dev/urandom > /var/log/big.bin")
	read := func() int64 {
		pid, err := osexec.Command("pgrep", "-o", "-f", "^/versitygw ").Output()
		if err != nil {
			t.Fatalf("the evidence store's process: %v", err)
		}
		io, err := os.ReadFile("/proc/" + strings.TrimSpace(string(pid)) + "/io")
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(io), "\n") {
			if v, ok := strings.CutPrefix(line, "rchar: "); ok {
				n, _ := strconv.ParseInt(v, 10, 64)
				return n
			}
		}
		t.Fatalf("no rchar in /proc/PID/io: %s", io)
		return 0
	}
	before := read()
	annotate(t, ns, "big", map[string]string{"podcopy/collect": "/var/log/big.bin"})
	uploads = func(ctx context.Context) int {
		out, err := e.client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(e.bucket), Prefix: aws.String(ns + "/")})
		if err != nil {
			return -1
		}
		return len(out.Uploads)
	}
	waitFor(t, time.Minute, "the upload in flight", func(context.Context) (bool, error) { return read()-before >= 32<<20, nil })
	return uploads
}

func hexSHA(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// apiCode is an S3 error's code ("" when err is not one).
func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestEvidenceStore (issue 21): a collection lands in the locked bucket byte-exact (hashes in
// the source container against the objects), every object under its retention, with the
// server's SHA-256 checksum equal to the manifest's; the server refuses to delete a locked
// version or shorten its retention; the custody record in the bucket verifies with the
// published keys and signs every object's digest.
func TestEvidenceStore(t *testing.T) {
	t.Parallel()
	store := evidence(t)
	ns := fixedNamespace(t, "e2e-evidence")
	src := sourcePod(t, ns, "app", imageBusybox, `mkdir -p /var/log/ev && echo hello > /var/log/ev/small.log &&
head -c 20971520 /dev/urandom > /var/log/ev/big.bin && ln /var/log/ev/small.log /var/log/ev/hard.log`)
	annotate(t, ns, "app", map[string]string{"podcopy/collect": "/var/log/ev"})
	st := waitFinal(t, ns, "app", "")
	if st.Phase != status.Succeeded {
		t.Fatalf("status %+v", st)
	}
	prefix := ns + "/app/" + st.Collection + "/"
	if st.Bucket != "s3://evidence/"+prefix || st.RetentionMode != "GOVERNANCE" || st.RetainUntil == "" || st.CustodyKeyID == "" {
		t.Fatalf("status does not say where and how the collection is locked: %+v", st)
	}
	until, err := time.Parse(time.RFC3339, st.RetainUntil)
	if err != nil || until.Before(time.Now().Add(23*time.Hour)) {
		t.Fatalf("retainUntil %s (%v): want a day after the start", st.RetainUntil, err)
	}
	srcTarget := exec.Target{Namespace: ns, Pod: src.Name, Container: "app"}

	list, err := store.client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(store.bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range list.Contents {
		keys = append(keys, strings.TrimPrefix(aws.ToString(o.Key), prefix))
	}
	slices.Sort(keys)
	// The big file is an object of its own; the small one and its hard link are a bundle's
	// member, the same bytes (contract §5).
	want := []string{"_bundles/000001.tar", "app/var/log/ev/big.bin", custody.FileName, custody.ManifestSubject}
	if !slices.Equal(keys, want) {
		t.Fatalf("objects under %s: %v, want %v", prefix, keys, want)
	}
	var m manifest.Manifest
	if err := json.Unmarshal(store.get(t, prefix+"manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	if m.Destination.Bucket != st.Bucket || m.Destination.Retention == nil || m.Destination.Retention.RetainUntil != st.RetainUntil {
		t.Fatalf("manifest destination %+v", m.Destination)
	}
	manifestSHA := map[string]string{}
	bundle := store.get(t, prefix+"_bundles/000001.tar")
	for _, f := range m.Files {
		manifestSHA[f.Path] = f.SHA256
		if f.Path == "/var/log/ev/big.bin" {
			continue
		}
		if f.Bundle != "_bundles/000001.tar" || f.Offset+f.Size > int64(len(bundle)) {
			t.Fatalf("%s: bundle %q offset %d size %d (the bundle holds %d bytes)", f.Path, f.Bundle, f.Offset, f.Size, len(bundle))
		}
		if got, src := hexSHA(bundle[f.Offset:f.Offset+f.Size]), sha256In(t, srcTarget, f.Path); got != src || got != f.SHA256 {
			t.Errorf("%s in the bundle: sha256 %s, source %s, manifest %s", f.Path, got, src, f.SHA256)
		}
	}
	for _, k := range want {
		key := prefix + k
		head, err := store.client.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(key), ChecksumMode: types.ChecksumModeEnabled})
		if err != nil {
			t.Fatal(err)
		}
		if head.ObjectLockMode != types.ObjectLockModeGovernance || !aws.ToTime(head.ObjectLockRetainUntilDate).Equal(until) {
			t.Errorf("%s: lock %s until %v, want GOVERNANCE until %s", k, head.ObjectLockMode, aws.ToTime(head.ObjectLockRetainUntilDate), st.RetainUntil)
		}
		body := store.get(t, key)
		sum := hexSHA(body)
		if path, ok := strings.CutPrefix(k, "app"); ok {
			if got := sha256In(t, srcTarget, path); got != sum {
				t.Errorf("%s: object sha256 %s, source %s", k, sum, got)
			}
			if manifestSHA[path] != sum {
				t.Errorf("%s: object sha256 %s, manifest %s", k, sum, manifestSHA[path])
			}
		}
		// The server's own checksum: the whole object's SHA-256, the manifest's, for an
		// object of one part (one PUT) and for the 20 MiB file streamed in one PUT with its
		// SHA-256 in a trailer (destination.s3.streamMaxSize), not a multipart composite.
		server := aws.ToString(head.ChecksumSHA256)
		raw, _ := hex.DecodeString(sum)
		if server != base64.StdEncoding.EncodeToString(raw) {
			t.Errorf("%s (%d bytes): server checksum %q, want the manifest's %s", k, len(body), server, sum)
		}
		t.Logf("%s: %d bytes, sha256 %s, server checksum %s (%s), %s until %s", k, len(body), sum[:16], server, head.ChecksumType, head.ObjectLockMode, aws.ToTime(head.ObjectLockRetainUntilDate).Format(time.RFC3339))

		_, err = store.client.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(key), VersionId: head.VersionId})
		if apiCode(err) != "AccessDenied" {
			t.Errorf("%s: deleting the locked version: %v, want AccessDenied", k, err)
		}
	}
	key := prefix + "app/var/log/ev/big.bin"
	_, err = store.client.PutObjectRetention(t.Context(), &s3.PutObjectRetentionInput{Bucket: aws.String(store.bucket), Key: aws.String(key),
		Retention: &types.ObjectLockRetention{Mode: types.ObjectLockRetentionModeGovernance, RetainUntilDate: aws.Time(time.Now().Add(time.Minute))}})
	if err == nil {
		t.Error("shortening a locked object's retention was accepted")
	} else {
		t.Logf("shortening the retention: %v", err)
	}

	// The record in the bucket verifies with the published keys and signs what is stored.
	keys2, err := custody.PublishedTrust(t.Context(), client, "podcopy", "podcopy-signing-keys", "")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := custody.Verify(t.Context(), store.get(t, prefix+custody.FileName), keys2)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range want {
		if k == custody.FileName {
			continue
		}
		if rec.Subjects[k] != hexSHA(store.get(t, prefix+k)) {
			t.Errorf("%s: signed %s, stored %s", k, rec.Subjects[k], hexSHA(store.get(t, prefix+k)))
		}
	}
	if rec.Predicate.Retention == nil || rec.Predicate.Retention.RetainUntil != st.RetainUntil || rec.Predicate.Container.ImageDigest == "" || rec.Predicate.Container.ID == "" {
		t.Errorf("custody predicate %+v", rec.Predicate)
	}

	// The plugin reads the bucket with the user's own S3 credentials (AWS environment).
	admin, env := kubeconfig, store.env(t)
	if out, errOut, code := kubectlPodcopyEnv(t, env, admin, "verify", st.Bucket); code != 0 || !strings.Contains(out, "verified 3 files") || !strings.Contains(out, "signed by key "+st.CustodyKeyID) {
		t.Fatalf("verify %s: exit %d\n%s%s", st.Bucket, code, out, errOut)
	} else {
		t.Logf("verify: %s", strings.TrimSpace(out))
	}
	if out, errOut, code := kubectlPodcopyEnv(t, env, nowhereKubeconfig(t), "ls", "s3://evidence/"+ns); code != 0 || !strings.Contains(out, st.Collection) || !strings.Contains(out, "Complete") {
		t.Fatalf("ls s3://evidence/%s: exit %d\n%s%s", ns, code, out, errOut)
	}
	fetched := t.TempDir()
	if out, errOut, code := kubectlPodcopyEnv(t, env, admin, "fetch", st.Bucket, "-o", fetched); code != 0 || !strings.Contains(out, "fetched 3 files") {
		t.Fatalf("fetch %s: exit %d\n%s%s", st.Bucket, code, out, errOut)
	}
	pems, _, code := kubectlPodcopy(t, admin, "key")
	keyFile := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(keyFile, []byte(pems), 0o644); code != 0 || err != nil {
		t.Fatalf("key: exit %d, %v", code, err)
	}
	if out, errOut, code := kubectlPodcopy(t, nowhereKubeconfig(t), "verify", filepath.Join(fetched, st.Collection), "--key", keyFile); code != 0 || !strings.Contains(out, "verified 3 files") {
		t.Fatalf("offline verify of the fetched bucket collection: exit %d\n%s%s", code, out, errOut)
	}

	// Someone with the right to bypass GOVERNANCE rewrites a file and its manifest as new
	// versions and deletes the originals: the signed record names the file.
	var tampered manifest.Manifest
	if err := json.Unmarshal(store.get(t, prefix+"manifest.json"), &tampered); err != nil {
		t.Fatal(err)
	}
	planted := []byte("planted\n")
	for i, f := range tampered.Files {
		if f.Path == "/var/log/ev/big.bin" {
			tampered.Files[i].SHA256, tampered.Files[i].Size = hexSHA(planted), int64(len(planted))
		}
	}
	body, _ := json.Marshal(tampered)
	for k, data := range map[string][]byte{"app/var/log/ev/big.bin": planted, "manifest.json": body} {
		old, err := store.client.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(prefix + k)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.client.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(prefix + k), Body: strings.NewReader(string(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := store.client.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(prefix + k),
			VersionId: old.VersionId, BypassGovernanceRetention: aws.Bool(true)}); err != nil {
			t.Fatalf("deleting %s's original version with bypass: %v", k, err)
		}
	}
	for _, cmd := range [][]string{{"verify", st.Bucket}, {"fetch", st.Bucket, "-o", t.TempDir()}} {
		_, errOut, code := kubectlPodcopyEnv(t, env, admin, cmd...)
		// The record names the versions written: both are gone, and what stands in their place
		// is named (the replacement's bytes are not read at all).
		if code == 0 || !strings.Contains(errOut, "TAMPERED /var/log/ev/big.bin: the recorded version") || !strings.Contains(errOut, "TAMPERED manifest.json: the recorded version") || strings.Contains(errOut, "small.log") {
			t.Fatalf("%s after rewriting a file and its manifest in the bucket: exit %d, stderr %s", cmd[0], code, errOut)
		}
		t.Logf("%s after the rewrite: %s", cmd[0], strings.TrimSpace(errOut))
	}
}

// nowhereKubeconfig is a kubeconfig file that does not exist: the plugin has no cluster.
func nowhereKubeconfig(t *testing.T) string { return filepath.Join(t.TempDir(), "none.kubeconfig") }

// fixedNamespace makes namespace name afresh (the e2e values give it a destination mode of
// its own) and deletes it afterwards.
func fixedNamespace(t *testing.T, name string) string {
	t.Helper()
	_ = client.CoreV1().Namespaces().Delete(t.Context(), name, metav1.DeleteOptions{})
	waitFor(t, 2*time.Minute, "an earlier "+name+" to go", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if _, err := client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	waitFor(t, 30*time.Second, "default ServiceAccount", func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	return name
}

// TestBucketManySmallFiles (issue 35): 10,000 files of 1 KiB (the chart's policy.maxFiles)
// into the locked bucket alone. They are packed into a few bundle objects, not one signed PUT
// each; the collection verifies from the bucket and offline after fetch, and a new version of
// a bundle with one file changed is named by that file (the recorded version still holds
// the signed bytes).
func TestBucketManySmallFiles(t *testing.T) {
	t.Parallel()
	store := evidence(t)
	ns := fixedNamespace(t, "e2e-bucket-many")
	const files = 10000
	// Each file 1 KiB of its own (awk: busybox has no split); in the pod at about 1 s.
	sourcePod(t, ns, "many", imageBusybox, fmt.Sprintf(`mkdir -p /var/log/many && awk 'BEGIN{srand(); for(i=0;i<%d;i++){f=sprintf("/var/log/many/f%%05d",i); s=""; for(j=0;j<128;j++) s=s sprintf("%%08x", int(rand()*4294967295)); printf "%%s", s > f; close(f)}}'`, files))
	start := time.Now()
	annotate(t, ns, "many", map[string]string{"podcopy/collect": "/var/log/many"})
	st := waitFinalWithin(t, ns, "many", "", 8*time.Minute)
	t.Logf("%d files of 1 KiB into the bucket: %s %s after %s: %s", files, st.Phase, st.Reason, time.Since(start).Round(time.Second), st.Message)
	if st.Phase != status.Succeeded || st.Files != files || st.Bucket == "" {
		t.Fatalf("status %+v", st)
	}
	prefix := strings.TrimPrefix(st.Bucket, "s3://evidence/")
	list, err := store.client.ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(store.bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var bundles []string
	for _, o := range list.Contents {
		if k := strings.TrimPrefix(aws.ToString(o.Key), prefix); strings.HasPrefix(k, "_bundles/") {
			bundles = append(bundles, k)
		}
	}
	if len(list.Contents) > 10 || len(bundles) < 3 {
		t.Fatalf("%d objects under %s, %d of them bundles: want the files in a few bundles", len(list.Contents), prefix, len(bundles))
	}
	t.Logf("%d objects, bundles %v", len(list.Contents), bundles)
	env := store.env(t)
	if out, errOut, code := kubectlPodcopyEnv(t, env, kubeconfig, "verify", st.Bucket); code != 0 || !strings.Contains(out, fmt.Sprintf("verified %d files", files)) {
		t.Fatalf("verify %s: exit %d\n%s%s", st.Bucket, code, out, errOut)
	}
	fetched := t.TempDir()
	if out, errOut, code := kubectlPodcopyEnv(t, env, kubeconfig, "fetch", st.Bucket, "-o", fetched); code != 0 || !strings.Contains(out, fmt.Sprintf("fetched %d files", files)) {
		t.Fatalf("fetch %s: exit %d\n%s%s", st.Bucket, code, out, errOut)
	}
	pems, _, code := kubectlPodcopy(t, kubeconfig, "key")
	keyFile := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(keyFile, []byte(pems), 0o644); code != 0 || err != nil {
		t.Fatalf("key: exit %d, %v", code, err)
	}
	if out, errOut, code := kubectlPodcopy(t, nowhereKubeconfig(t), "verify", filepath.Join(fetched, st.Collection), "--key", keyFile); code != 0 || !strings.Contains(out, fmt.Sprintf("verified %d files", files)) {
		t.Fatalf("offline verify of the fetched collection: exit %d\n%s%s", code, out, errOut)
	}

	// A new version of the first bundle (Object Lock keeps the recorded one) with one byte of
	// one file changed: verify and fetch name that file.
	var m manifest.Manifest
	if err := json.Unmarshal(store.get(t, prefix+"manifest.json"), &m); err != nil {
		t.Fatal(err)
	}
	var victim manifest.File
	for _, f := range m.Files {
		if f.Bundle == "_bundles/000001.tar" && f.Size > 0 {
			victim = f
			break
		}
	}
	bad := store.get(t, prefix+victim.Bundle)
	bad[victim.Offset+100] ^= 0xff
	if _, err := store.client.PutObject(t.Context(), &s3.PutObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(prefix + victim.Bundle), Body: bytes.NewReader(bad)}); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range [][]string{{"verify", st.Bucket}, {"fetch", st.Bucket, "-o", t.TempDir()}} {
		_, errOut, code := kubectlPodcopyEnv(t, env, kubeconfig, cmd...)
		if code == 0 || !strings.Contains(errOut, "TAMPERED "+victim.Path+" (in "+victim.Bundle+"): changed in version") || strings.Count(errOut, "TAMPERED") != 2 {
			t.Fatalf("%s after a new version of %s: exit %d, stderr %s", cmd[0], victim.Bundle, code, errOut)
		}
		t.Logf("%s after the new bundle version: %s", cmd[0], strings.TrimSpace(errOut))
	}
}

// TestBucketOnly (issue 21): a namespace configured for the bucket only (the e2e values'
// destination.namespaceModes) collects with one exec leg: nothing in the analysis pod, the
// collection complete and signed in the bucket. Followed there, a log becomes signed,
// chained segments: fetched across a rotation it equals the source's generations; a
// deleted middle segment breaks the chain, and verify says where.
func TestBucketOnly(t *testing.T) {
	t.Parallel()
	store := evidence(t)
	ns := fixedNamespace(t, "e2e-bucket-only")
	sourcePod(t, ns, "app", imageBusybox, "mkdir -p /var/log/b && head -c 3000000 /dev/urandom > /var/log/b/data.bin && echo x > /var/log/b/x.log")
	annotate(t, ns, "app", map[string]string{"podcopy/collect": "/var/log/b"})
	st := waitFinal(t, ns, "app", "")
	if st.Phase != status.Succeeded || st.Destination != "" || st.Bucket == "" {
		t.Fatalf("status %+v: want Succeeded into the bucket only", st)
	}
	if out, err := run(t, analysis(t), "sh", "-c", `ls -A "$1" 2>/dev/null | wc -l`, "sh", "/collect/"+ns); err != nil || strings.TrimSpace(out) != "0" {
		t.Fatalf("the analysis pod holds %q entries for %s (%v)", out, ns, err)
	}
	admin := kubeconfig
	if out, errOut, code := kubectlPodcopyEnv(t, store.env(t), admin, "verify", st.Bucket); code != 0 || !strings.Contains(out, "verified 2 files") || !strings.Contains(out, "signed by key") {
		t.Fatalf("verify %s: exit %d\n%s%s", st.Bucket, code, out, errOut)
	}

	// Follow into the bucket across a rotation: signed segments, each chained to the one
	// before; fetch reassembles the generations; a deleted middle segment is reported.
	src := exec.Target{Namespace: ns, Pod: "app", Container: "app"}
	mustRun(t, src, "sh", "-c", `i=0; while [ $i -lt 200 ]; do echo "first generation line $i" >> /var/log/b/x.log; i=$((i+1)); done`)
	annotate(t, ns, "app", map[string]string{"podcopy/mode": "follow", "podcopy/collect": "/var/log/b/x.log", "podcopy/interval": "5s"})
	size := func() int64 {
		n, err := strconv.ParseInt(strings.TrimSpace(mustRun(t, src, "sh", "-c", "cat /var/log/b/x.log.1 /var/log/b/x.log 2>/dev/null | wc -c")), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	harvested := func(want int64) status.Status {
		var fst status.Status
		waitFor(t, 2*time.Minute, fmt.Sprintf("%d bytes harvested into the bucket", want), func(ctx context.Context) (bool, error) {
			fst, _ = getStatus(t, ns, "app")
			return fst.Collection == "follow" && fst.Bytes == want, nil
		})
		return fst
	}
	harvested(size())
	mustRun(t, src, "sh", "-c", `echo "last line of the first generation" >> /var/log/b/x.log`)
	harvested(size())
	mustRun(t, src, "sh", "-c", `mv /var/log/b/x.log /var/log/b/x.log.1 && i=0; while [ $i -lt 100 ]; do echo "second generation line $i" >> /var/log/b/x.log; i=$((i+1)); done`)
	fst := harvested(size())
	if fst.Destination != "" || !strings.HasPrefix(fst.Bucket, "s3://evidence/"+ns+"/app/follow/") {
		t.Fatalf("follow status %+v: want the bucket only", fst)
	}
	pod, err := client.CoreV1().Pods(ns).Get(t.Context(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prefix := ns + "/app/follow/app/var/log/b/x.log/" + string(pod.UID) + "/"
	chain := "s3://evidence/" + prefix
	env := store.env(t)
	out := t.TempDir()
	if o, errOut, code := kubectlPodcopyEnv(t, env, admin, "fetch", chain, "-o", out); code != 0 || !strings.Contains(o, "no gap and no edit") {
		t.Fatalf("fetch %s: exit %d\n%s%s", chain, code, o, errOut)
	} else {
		t.Logf("fetch: %s", strings.TrimSpace(o))
	}
	got, err := os.ReadFile(filepath.Join(out, "x.log"))
	if err != nil {
		t.Fatal(err)
	}
	if want := mustRun(t, src, "cat", "/var/log/b/x.log.1", "/var/log/b/x.log"); string(got) != want {
		t.Fatalf("reassembled %d bytes, the source's generations are %d bytes", len(got), len(want))
	}
	list, err := store.client.ListObjectVersions(t.Context(), &s3.ListObjectVersionsInput{Bucket: aws.String(store.bucket), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, v := range list.Versions {
		if strings.HasSuffix(aws.ToString(v.Key), ".seg") && !slices.Contains(segs, aws.ToString(v.Key)) {
			segs = append(segs, aws.ToString(v.Key))
		}
	}
	slices.Sort(segs)
	if len(segs) < 3 {
		t.Fatalf("%d segments: want at least 3 (before the rotation, after it)", len(segs))
	}
	middle := segs[1]
	for _, v := range list.Versions {
		if aws.ToString(v.Key) == middle {
			if _, err := store.client.DeleteObject(t.Context(), &s3.DeleteObjectInput{Bucket: aws.String(store.bucket), Key: v.Key, VersionId: v.VersionId, BypassGovernanceRetention: aws.Bool(true)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, errOut, code := kubectlPodcopyEnv(t, env, admin, "verify", chain); code == 0 || !strings.Contains(errOut, "segment 2") || !strings.Contains(errOut, "missing") {
		t.Fatalf("verify after deleting %s: exit %d, stderr %s", middle, code, errOut)
	} else {
		t.Logf("verify after deleting the middle segment: %s", strings.TrimSpace(errOut))
	}
}

// TestEvidenceStoreKilled (issue 21): the S3 server is killed mid-upload (its container
// restarts with its data); the collection is retried to a terminal status, complete in the
// bucket (verified) or absent (no manifest), and no multipart upload is left open. Not
// parallel, like TestFaults.
func TestEvidenceStoreKilled(t *testing.T) {
	store := evidence(t)
	ns := fixedNamespace(t, "e2e-evidence-killed")
	uploads := store.bigUploadStarted(t, ns)
	if out, err := osexec.Command("pkill", "-9", "-f", "^/versitygw ").CombinedOutput(); err != nil {
		t.Fatalf("killing the evidence store: %v %s", err, out)
	}
	injected := time.Now()
	st := waitFinalWithin(t, ns, "big", "", terminalBound)
	t.Logf("terminal %.1fs after the kill: %s, attempt %d: %s", time.Since(injected).Seconds(), st.Phase, st.Attempt, st.Message)
	checkCompleteOrAbsent(t, ns, "big", st)
	admin := kubeconfig
	switch st.Phase {
	case status.Succeeded:
		if out, errOut, code := kubectlPodcopyEnv(t, store.env(t), admin, "verify", st.Bucket); code != 0 || !strings.Contains(out, "verified 1 files") {
			t.Fatalf("verify %s: exit %d\n%s%s", st.Bucket, code, out, errOut)
		}
	case status.Failed:
		if _, err := store.client.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(strings.TrimPrefix(st.Bucket, "s3://"+store.bucket+"/") + "manifest.json")}); err == nil {
			t.Fatal("a failed collection has a manifest in the bucket")
		}
	default:
		t.Fatalf("phase %s", st.Phase)
	}
	waitFor(t, 2*time.Minute, "no multipart upload left open", func(ctx context.Context) (bool, error) { return uploads(ctx) == 0, nil })
}

// TestEvidenceStorePaused (issue 35): the S3 server stopped (SIGSTOP) for 60 s in the middle
// of a bucket-only collection, then resumed. The source's stream waits in the agent's spool
// while it can, and the collection ends Succeeded, or Failed with the spool's reason, never
// with a cut source stream; nothing half-written is published and no upload is left open.
// Not parallel: every bucket collection of the suite would stall with it.
func TestEvidenceStorePaused(t *testing.T) {
	store := evidence(t)
	ns := fixedNamespace(t, "e2e-bucket-paused")
	uploads := store.bigUploadStarted(t, ns)
	signal := func(sig string) {
		if out, err := osexec.Command("pkill", "-"+sig, "-f", "^/versitygw ").CombinedOutput(); err != nil {
			t.Fatalf("pkill -%s versitygw: %v %s", sig, err, out)
		}
	}
	signal("STOP")
	t.Cleanup(func() { _ = osexec.Command("pkill", "-CONT", "-f", "^/versitygw ").Run() })
	paused := time.Now()
	time.Sleep(60 * time.Second)
	mid, _ := getStatus(t, ns, "big")
	signal("CONT")
	t.Logf("after 60 s paused: %s %s attempt %d: %s", mid.Phase, mid.Reason, mid.Attempt, mid.Message)
	st := waitFinalWithin(t, ns, "big", "", terminalBound)
	t.Logf("terminal %.1fs after the pause began: %s %s, attempt %d: %s", time.Since(paused).Seconds(), st.Phase, st.Reason, st.Attempt, st.Message)
	if mid.Reason == failure.StreamCut || st.Reason == failure.StreamCut {
		t.Fatalf("the source's stream was cut: during the pause %q, at the end %q", mid.Message, st.Message)
	}
	// An attempt that failed says why in its Event: the spool's bound, never a cut stream.
	evs, err := client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=big,reason=CollectionFailed"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.Items {
		t.Logf("event: %s", ev.Message)
		if strings.Contains(ev.Message, "stream was cut") || strings.Contains(ev.Message, "ended early") {
			t.Fatalf("an attempt's source stream was cut: %s", ev.Message)
		}
	}
	switch st.Phase {
	case status.Succeeded:
		if out, errOut, code := kubectlPodcopyEnv(t, store.env(t), kubeconfig, "verify", st.Bucket); code != 0 || !strings.Contains(out, "verified 1 files") {
			t.Fatalf("verify %s: exit %d\n%s%s", st.Bucket, code, out, errOut)
		}
	case status.Failed:
		if st.Reason != failure.SpoolFull && st.Reason != failure.Stalled && st.Reason != failure.DestinationFailed {
			t.Fatalf("failed with reason %s: want the spool's or the destination's", st.Reason)
		}
		if _, err := store.client.HeadObject(t.Context(), &s3.HeadObjectInput{Bucket: aws.String(store.bucket), Key: aws.String(strings.TrimPrefix(st.Bucket, "s3://"+store.bucket+"/") + "manifest.json")}); err == nil {
			t.Fatal("a failed collection has a manifest in the bucket")
		}
	default:
		t.Fatalf("phase %s", st.Phase)
	}
	waitFor(t, 2*time.Minute, "no multipart upload left open", func(ctx context.Context) (bool, error) { return uploads(ctx) == 0, nil })
}
