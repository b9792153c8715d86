//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/podcopy/podcopy/internal/destination"
	podcopyplugin "github.com/podcopy/podcopy/internal/plugin"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

var (
	pluginOnce sync.Once
	pluginPath string
	pluginErr  error
)

// plugin builds kubectl-podcopy once for the suite.
func plugin(t *testing.T) string {
	t.Helper()
	pluginOnce.Do(func() {
		dir, err := os.MkdirTemp("", "podcopy-plugin")
		if err != nil {
			pluginErr = err
			return
		}
		pluginPath = filepath.Join(dir, "kubectl-podcopy")
		out, err := osexec.Command("go", "build", "-o", pluginPath, "../cmd/kubectl-podcopy").CombinedOutput()
		if err != nil {
			pluginErr = fmt.Errorf("building the plugin: %v\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return pluginPath
}

// userKubeconfig writes a kubeconfig for a client-certificate user, namespace ns.
func userKubeconfig(t *testing.T, user, ns string) string {
	t.Helper()
	c := userConfig(t, user)
	kc := clientcmdapi.NewConfig()
	kc.Clusters["local"] = &clientcmdapi.Cluster{Server: c.Host, CertificateAuthorityData: c.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: c.CertData, ClientKeyData: c.KeyData}
	kc.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: user, Namespace: ns}
	kc.CurrentContext = "local"
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectlPodcopy runs the plugin as the user of kubeconfig; it returns stdout, stderr and
// the exit code.
func kubectlPodcopy(t *testing.T, kubeconfig string, args ...string) (string, string, int) {
	t.Helper()
	return kubectlPodcopyEnv(t, nil, kubeconfig, args...)
}

// kubectlPodcopyEnv is kubectlPodcopy with env added to the plugin's environment.
func kubectlPodcopyEnv(t *testing.T, env []string, kubeconfig string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := osexec.CommandContext(t.Context(), plugin(t), append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if exit, ok := err.(*osexec.ExitError); ok {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestPlugin runs kubectl-podcopy as client-certificate users (issue 14): erin may exec in
// her namespace (and read the analysis pod), frank may not. erin's collect --wait succeeds
// with progress and is on record as hers; frank is refused with the policy's message; fetch
// verifies every file; a byte changed in the analysis pod makes fetch and verify fail and
// name the file.
func TestPlugin(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	sourcePod(t, ns, "app", imageBusybox, `mkdir -p /var/log/data/sub && head -c 157286400 /dev/urandom > /var/log/data/big.bin &&
for i in 1 2 3; do echo "line $i" > /var/log/data/sub/f$i.log; done`)
	pods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch", "patch"}}
	execPods := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}}
	erin, frank := "erin-"+ns, "frank-"+ns
	grant(t, ns, erin, pods, execPods)
	grant(t, ns, frank, pods)
	// erin reads collections in the analysis pod too (fetch, verify); the Role lives in the
	// podcopy namespace and is removed with the test.
	grantCleanup(t, "podcopy", erin, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}}, execPods)
	erinKC, frankKC := userKubeconfig(t, erin, ns), userKubeconfig(t, frank, ns)
	waitFor(t, 30*time.Second, "erin's RBAC", func(ctx context.Context) (bool, error) {
		_, _, code := kubectlPodcopy(t, erinKC, "ls")
		return code == 0, nil
	})

	_, errOut, code := kubectlPodcopy(t, frankKC, "collect", "app", "/var/log/data", "--wait")
	if code == 0 || !strings.Contains(errOut, "requires permission to create pods/exec") {
		t.Fatalf("frank (no exec): exit %d, stderr %s", code, errOut)
	}
	t.Logf("frank refused: %s", strings.TrimSpace(errOut))

	out, errOut, code := kubectlPodcopy(t, erinKC, "collect", "app", "/var/log/data", "--wait")
	if code != 0 || !strings.Contains(out, "Succeeded: collected 4 files") || !strings.Contains(errOut, "Running: ") {
		t.Fatalf("erin collect: exit %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	t.Logf("erin collect --wait (not a terminal: plain progress lines):\n%s%s", errOut, out)

	out, _, code = kubectlPodcopy(t, erinKC, "status", "app", "-o", "json")
	var st status.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.RequestedBy != erin || st.Phase != status.Succeeded {
		t.Fatalf("status: exit %d, %v, %+v", code, err, st)
	}

	dir := t.TempDir()
	out, errOut, code = kubectlPodcopy(t, erinKC, "fetch", "app", "-o", dir)
	if code != 0 || !strings.Contains(out, "fetched 4 files") || !strings.Contains(out, "every SHA-256 matches") {
		t.Fatalf("fetch: exit %d\n%s%s", code, out, errOut)
	}
	t.Logf("fetch: %s", strings.TrimSpace(out))
	if got, err := os.ReadFile(filepath.Join(dir, st.Collection, "app/var/log/data/sub/f2.log")); err != nil || string(got) != "line 2\n" {
		t.Fatalf("fetched file: %q %v", got, err)
	}
	out, errOut, code = kubectlPodcopy(t, erinKC, "verify", "app")
	if code != 0 || !strings.Contains(out, "verified 4 files") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}
	slowReader(t, ns)

	// Tamper with the evidence: one byte of one file, in place, in the analysis pod.
	colDir := st.Destination[strings.Index(st.Destination, ":")+1:]
	// The file is random: write X there unless X is already there (1 in 256), then Y.
	mustRun(t, analysis(t), "sh", "-c", `c=$(dd if="$1" bs=1 skip=1000 count=1 2>/dev/null); r=X; [ "$c" = X ] && r=Y; printf %s "$r" | dd of="$1" bs=1 seek=1000 conv=notrunc 2>/dev/null`, "sh", colDir+"/app/var/log/data/big.bin")
	_, errOut, code = kubectlPodcopy(t, erinKC, "verify", "app")
	if code == 0 || !strings.Contains(errOut, "MISMATCH /var/log/data/big.bin") {
		t.Fatalf("verify after tampering: exit %d, stderr %s", code, errOut)
	}
	t.Logf("verify after tampering: %s", strings.TrimSpace(errOut))
	_, errOut, code = kubectlPodcopy(t, erinKC, "fetch", "app", "-o", t.TempDir())
	if code == 0 || !strings.Contains(errOut, "MISMATCH /var/log/data/big.bin: sha256 ") || strings.Contains(errOut, "f2.log") {
		t.Fatalf("fetch after tampering: exit %d, stderr %s", code, errOut)
	}

	out, _, code = kubectlPodcopy(t, erinKC, "ls", "app")
	if code != 0 || !strings.Contains(out, st.Collection) || !strings.Contains(out, erin) {
		t.Fatalf("ls app: exit %d\n%s", code, out)
	}
}

// TestPluginProgressBar runs collect --wait in a real terminal (tmux) on a large file and
// captures the screen while it runs: the bar is seen to move.
func TestPluginProgressBar(t *testing.T) {
	t.Parallel()
	if _, err := osexec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed (make deps installs it)")
	}
	ns := namespace(t)
	sourcePod(t, ns, "big", imageBusybox, "mkdir -p /var/log && head -c 524288000 /dev/urandom > /var/log/big.bin")
	kc := kubeconfig
	session := "podcopy-" + ns
	cmd := fmt.Sprintf("%s --kubeconfig %s -n %s collect big /var/log/big.bin; echo EXIT=$?; sleep 60", plugin(t), kc, ns)
	if out, err := osexec.Command("tmux", "new-session", "-d", "-s", session, "-x", "110", "-y", "8", cmd).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v %s", err, out)
	}
	t.Cleanup(func() { _ = osexec.Command("tmux", "kill-session", "-t", session).Run() })
	percent := regexp.MustCompile(`(\d+) %`)
	seen := map[string]bool{}
	var last string
	waitFor(t, 3*time.Minute, "the collection to end in the terminal", func(ctx context.Context) (bool, error) {
		out, err := osexec.Command("tmux", "capture-pane", "-p", "-t", session).Output()
		if err != nil {
			return false, nil
		}
		last = string(out)
		for _, m := range percent.FindAllStringSubmatch(last, -1) {
			seen[m[1]] = true
		}
		time.Sleep(200 * time.Millisecond)
		return strings.Contains(last, "EXIT="), nil
	})
	t.Logf("terminal at the end:\n%s", strings.TrimRight(last, "\n"))
	if !strings.Contains(last, "EXIT=0") || !strings.Contains(last, "Succeeded") {
		t.Fatal("collect did not succeed in the terminal")
	}
	if len(seen) < 3 || !seen["100"] {
		t.Fatalf("progress values seen: %v (want the bar to move: several values, ending at 100)", seen)
	}
	t.Logf("progress values seen on screen: %d distinct (%v)", len(seen), keys(seen))
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// grantCleanup is grant in a namespace that outlives the test (the analysis pods'): the Role
// and its binding are removed when the test ends.
func grantCleanup(t *testing.T, ns, user string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	grant(t, ns, user, rules...)
	t.Cleanup(func() {
		ctx := context.Background()
		_ = client.RbacV1().RoleBindings(ns).Delete(ctx, "e2e-"+user, metav1.DeleteOptions{})
		_ = client.RbacV1().Roles(ns).Delete(ctx, "e2e-"+user, metav1.DeleteOptions{})
	})
}

// TestPluginTrustsNoTenantRecord (issue 20): a status forged by someone allowed to write it
// here (the admin: Pod creators no longer can, TestAdmissionOnCreate) naming a decoy pod
// and a collection that climbs out of -o is refused by fetch and verify. Issue 21: the
// collection's custody record is signed; fetched untouched, it verifies offline with the
// published keys (and fails once a file is touched); a file rewritten together with its
// manifest in the analysis pod fails verify and fetch, naming the file; a removed record is
// refused.
func TestPluginTrustsNoTenantRecord(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	admin := kubeconfig
	sourcePod(t, ns, "app", imageBusybox, "mkdir -p /var/log/data && echo original > /var/log/data/a.log && echo other > /var/log/data/b.log")
	sourcePod(t, ns, "decoy", imageBusybox, "mkdir -p /fake && echo decoy > /fake/manifest.json")
	annotate(t, ns, "app", map[string]string{"podcopy/collect": "/var/log/data"})
	st := waitFinal(t, ns, "app", "")
	if st.Phase != status.Succeeded || st.ManifestSHA256 == "" {
		t.Fatalf("status %+v", st)
	}
	if out, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "verify", "app"); code != 0 || !strings.Contains(out, "custody record signed by key "+st.CustodyKeyID) || st.CustodyKeyID == "" {
		t.Fatalf("verify of the agent's own (signed by %q): exit %d\n%s%s", st.CustodyKeyID, code, out, errOut)
	}
	// Fetched untouched, and the published keys saved: the fetched directory verifies
	// offline (no cluster: the kubeconfig points nowhere).
	keys, errOut, code := kubectlPodcopy(t, admin, "key")
	// The agent's key is published, or (with the signer) the signer's root that certifies it.
	if code != 0 || !strings.Contains(keys, "# podcopy custody key "+st.CustodyKeyID) && !strings.Contains(keys, custody.RoleHeader+": "+custody.RoleSignerRoot) {
		t.Fatalf("key: exit %d\n%s%s", code, keys, errOut)
	}
	keyFile := filepath.Join(t.TempDir(), "keys.pem")
	if err := os.WriteFile(keyFile, []byte(keys), 0o644); err != nil {
		t.Fatal(err)
	}
	fetched := t.TempDir()
	if out, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "fetch", "app", "-o", fetched); code != 0 || !strings.Contains(out, "signed by key") {
		t.Fatalf("fetch: exit %d\n%s%s", code, out, errOut)
	}
	nowhere := filepath.Join(t.TempDir(), "none.kubeconfig")
	local := filepath.Join(fetched, st.Collection)
	if out, errOut, code := kubectlPodcopy(t, nowhere, "verify", local, "--key", keyFile); code != 0 || !strings.Contains(out, "verified 2 files") {
		t.Fatalf("offline verify: exit %d\n%s%s", code, out, errOut)
	}
	if err := os.WriteFile(filepath.Join(local, "app/var/log/data/b.log"), []byte("other!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := kubectlPodcopy(t, nowhere, "verify", local, "--key", keyFile); code == 0 || !strings.Contains(errOut, "MISMATCH /var/log/data/b.log") {
		t.Fatalf("offline verify of a touched file: exit %d, stderr %s", code, errOut)
	} else {
		t.Logf("offline verify of a touched file: %s", strings.TrimSpace(errOut))
	}

	// Rewrite a.log and its manifest entry together, in the analysis pod: the signed record
	// names the file.
	dst := analysis(t)
	colDir := st.Destination[strings.Index(st.Destination, ":")+1:]
	m := readManifest(t, st)
	var old string
	for _, f := range m.Files {
		if f.Path == "/var/log/data/a.log" {
			old = f.SHA256
		}
	}
	mustRun(t, dst, "sh", "-c", `echo rewritten > "$1/app/var/log/data/a.log" && new=$(sha256sum "$1/app/var/log/data/a.log" | cut -d' ' -f1) && sed -i "s/$2/$new/" "$1/manifest.json"`, "sh", colDir, old)
	for _, cmd := range [][]string{{"verify", "app"}, {"fetch", "app", "-o", t.TempDir()}} {
		_, errOut, code := kubectlPodcopy(t, admin, append([]string{"-n", ns}, cmd...)...)
		if code == 0 || !strings.Contains(errOut, "MISMATCH /var/log/data/a.log") || !strings.Contains(errOut, "MISMATCH manifest.json") || strings.Contains(errOut, "b.log") {
			t.Fatalf("%s after rewriting a file and its manifest: exit %d, stderr %s", cmd[0], code, errOut)
		}
		t.Logf("%s: %s", cmd[0], strings.TrimSpace(errOut))
	}
	// The record itself removed: refused while keys are published.
	mustRun(t, dst, "rm", "--", colDir+"/custody.intoto.json")
	if _, errOut, code := kubectlPodcopy(t, admin, "-n", ns, "verify", "app"); code == 0 || !strings.Contains(errOut, "has no custody.intoto.json") {
		t.Fatalf("verify without the record: exit %d, stderr %s", code, errOut)
	}

	// A forged status (only the agent and system:masters may write one now).
	forged, _ := json.Marshal(status.Status{Request: st.Request, Phase: status.Succeeded, Collection: "../escaped",
		Destination: ns + "/decoy/app:/fake"})
	annotate(t, ns, "decoy", map[string]string{status.Annotation: string(forged)})
	out := t.TempDir()
	for _, cmd := range [][]string{{"verify", "decoy"}, {"fetch", "decoy", "-o", filepath.Join(out, "o")}} {
		_, errOut, code := kubectlPodcopy(t, admin, append([]string{"-n", ns}, cmd...)...)
		if code == 0 || !strings.Contains(errOut, "refusing the pod's status") {
			t.Fatalf("%s of a forged status: exit %d, stderr %s", cmd[0], code, errOut)
		}
		t.Logf("%s: %s", cmd[0], strings.TrimSpace(errOut))
	}
	if _, err := os.Stat(filepath.Join(out, "escaped")); err == nil {
		t.Fatal("fetch wrote outside -o")
	}
}

// slowReader reads the pod's latest collection (150 MiB) through the plugin's evidence
// library into a sink that takes 10 MB/s, a third of what the stream gives: every byte
// arrives and verifies. An exec stream read that slowly loses its last megabytes between the
// container and the client, with exit 0 (hack/cutprobe: every run at 10 MB/s), unless it is
// drained at its own pace, as fetch, verify and the console do through a spool.
func slowReader(t *testing.T, ns string) {
	t.Helper()
	o := podcopyplugin.NewOptions(io.Discard, io.Discard).With(client, executor, ns)
	def := destination.Defaults()
	o.AnalysisNamespace, o.AnalysisSelector, o.Dir = def.Namespace, def.Selector, def.Dir
	ev := o.Evidence()
	ev.SpoolDir = t.TempDir()
	ref, err := ev.ResolveArg(t.Context(), "app")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	res, err := ev.Stream(t.Context(), ref, &throttledSink{Discard: verify.NewDiscard(), rate: 10e6})
	if err != nil || res.Files != 4 || res.Bytes < 150<<20 {
		t.Fatalf("a reader at 10 MB/s: %d files, %d bytes: %v", res.Files, res.Bytes, err)
	}
	t.Logf("a reader at 10 MB/s: %d files (%d bytes) verified in %s", res.Files, res.Bytes, time.Since(t0).Round(time.Second))
}

// throttledSink is a verify.Discard that takes at most rate bytes per second.
type throttledSink struct {
	*verify.Discard
	rate  float64
	t0    time.Time
	taken int64
}

func (s *throttledSink) Create(e verify.Entry, r io.Reader) (int64, string, error) {
	if s.t0.IsZero() {
		s.t0 = time.Now()
	}
	return s.Discard.Create(e, readerFunc(func(p []byte) (int, error) {
		if ahead := time.Duration(float64(s.taken)/s.rate*float64(time.Second)) - time.Since(s.t0); ahead > 0 {
			time.Sleep(ahead) // the slow disk this test plays
		}
		n, err := r.Read(p[:min(len(p), 64<<10)])
		s.taken += int64(n)
		return n, err
	}))
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
