//go:build e2e

package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	cdbrowser "github.com/chromedp/cdproto/browser"
	cdruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/podcopy/podcopy/pkg/status"
)

// grantIn binds rules in ns to the ServiceAccount saNS/name.
func grantIn(t *testing.T, ns, saNS, name string, rules ...rbacv1.PolicyRule) {
	t.Helper()
	bind(t, ns, "grant-"+name, rbacv1.Subject{Kind: "ServiceAccount", Name: name, Namespace: saNS}, rules...)
}

// screenshot saves the tab as console-<name>.png next to the cluster state (and in
// $PODCOPY_SCREENSHOTS, the README's images, when set).
func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	var png []byte
	if err := chromedp.Run(tab, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatal(err)
	}
	dirs := []string{artifacts()}
	if d := os.Getenv("PODCOPY_SCREENSHOTS"); d != "" {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, "console-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// waitJS waits until the expression is true in the tab, and reports text on failure.
func waitJS(t *testing.T, tab context.Context, what, expr, show string) {
	t.Helper()
	var shown string
	defer func() {
		if t.Failed() && show != "" {
			_ = chromedp.Run(tab, chromedp.Evaluate(show, &shown))
			t.Logf("page shows: %s", shown)
		}
	}()
	waitFor(t, 2*time.Minute, what, func(context.Context) (bool, error) {
		var ok bool
		err := chromedp.Run(tab, chromedp.Evaluate(expr, &ok))
		return ok, err
	})
}

// clickNow clicks what sel finds in the page's own turn: the pod list is rebuilt every 2 s,
// and a node chromedp found a moment before may be gone by the time it clicks it.
func clickNow(sel string) chromedp.Action {
	return chromedp.Evaluate(`document.querySelector(`+jsString(sel)+`).click()`, nil)
}

func textOf(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	var s string
	if err := chromedp.Run(tab, chromedp.Evaluate(`document.querySelector(`+jsString(sel)+`).innerText`, &s)); err != nil {
		t.Fatal(err)
	}
	return s
}

func jsString(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// TestConsole drives the evidence console in real headless Chromium against the agent on
// the real cluster (issue 25): a responder sees the pods and collections of their
// namespace and not of another; starts a collection and sees the bar reach 100 %; opens
// its manifest, custody record and a preview; downloads it (the archive's bytes match the
// manifest, and the page says verified); sees FAILED once a file is tampered with in the
// analysis pod; an intern without pods/exec cannot start one and is told why.
func TestConsole(t *testing.T) {
	ns, other := namespace(t), namespace(t)
	sourcePod(t, ns, "web", imageBusybox, workload)
	sourcePod(t, other, "db", imageBusybox, workload)
	annotate(t, other, "db", map[string]string{"podcopy/collect": "/var/log/app/a.log"})
	if st := waitFinal(t, other, "db", ""); st.Phase != status.Succeeded {
		t.Fatalf("the other namespace's collection: %+v", st)
	}
	readAnalysis := []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}},
	}
	responder := saToken(t, ns, "responder", readAnalysis...)
	grantIn(t, ns, ns, "responder",
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch"}},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}})
	intern := saToken(t, ns, "intern")
	grantIn(t, ns, ns, "intern", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "patch"}})

	actx := browser(t)
	quiet := chromedp.WithErrorf(func(string, ...any) {})
	tab, closeTab := chromedp.NewContext(actx, quiet)
	defer closeTab()
	tab, cancel := context.WithTimeout(tab, 6*time.Minute)
	defer cancel()
	downloads := t.TempDir()
	if err := chromedp.Run(tab,
		cdbrowser.SetDownloadBehavior(cdbrowser.SetDownloadBehaviorBehaviorAllow).WithDownloadPath(downloads),
		chromedp.EmulateViewport(1400, 1000),
		chromedp.Navigate(shellURL(t)),
		chromedp.WaitVisible(`#token`, chromedp.ByID),
		chromedp.SendKeys(`#token`, responder, chromedp.ByID),
		chromedp.Click(`#signin`, chromedp.ByID),
		chromedp.SetValue(`#ns`, ns, chromedp.ByID),
		chromedp.Click(`#load`, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "the pod list", `[...document.querySelectorAll('#pods tbody tr')].some(r => r.dataset.pod === 'web')`, `document.body.innerText`)

	// Start a collection; the bar reaches 100 %.
	if err := chromedp.Run(tab,
		clickNow(`#pods tr[data-pod="web"] button`),
		chromedp.WaitVisible(`#collect-form`, chromedp.ByID),
		chromedp.SetValue(`#paths`, "/var/log/mysql/slow.log", chromedp.ByID),
		chromedp.Click(`#start`, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "the bar at 100 %", `document.getElementById('bar').value === 100 && document.getElementById('bar-text').innerText.startsWith('100 % · Succeeded')`, `document.getElementById('bar-text').innerText + ' | ' + document.getElementById('status').innerText`)
	st, _ := getStatus(t, ns, "web")
	if st.Phase != status.Succeeded || !strings.HasSuffix(st.RequestedBy, ":"+ns+":responder") {
		t.Fatalf("status %+v: the request is not the responder's own", st)
	}
	screenshot(t, tab, "pods")

	// The collection: signed and verified, its manifest, custody record and a preview.
	waitJS(t, tab, "the collection in the list", `[...document.querySelectorAll('#collections tbody button')].some(b => b.innerText === `+jsString(st.Collection)+`)`, `document.getElementById('collections').innerText`)
	if got := textOf(t, tab, "#collections"); !strings.Contains(got, "verified") {
		t.Fatalf("collections table: %s", got)
	}
	if err := chromedp.Run(tab, chromedp.Evaluate(`[...document.querySelectorAll('#collections tbody button')].find(b => b.innerText === `+jsString(st.Collection)+`).click()`, nil)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "the collection's files", `document.getElementById('files').innerText.includes('/var/log/mysql/slow.log') && document.getElementById('sig').innerText === 'verified'`, `document.getElementById('collection').innerText`)
	custodyText := textOf(t, tab, "#custody")
	for _, want := range []string{"system:serviceaccount:" + ns + ":responder", "sha256:", st.Collection[len(st.Collection)-8:]} {
		if !strings.Contains(custodyText, want) {
			t.Errorf("custody record view lacks %q:\n%s", want, custodyText)
		}
	}
	m := readManifest(t, st)
	if got := textOf(t, tab, "#files"); !strings.Contains(got, m.Files[0].SHA256) {
		t.Errorf("files table lacks the manifest's SHA-256 %s:\n%s", m.Files[0].SHA256, got)
	}
	if err := chromedp.Run(tab, chromedp.Click(`#files tbody button`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "the preview", `document.getElementById('preview').innerText.includes('binary')`, `document.getElementById('preview').innerText`)
	if err := chromedp.Run(tab, chromedp.Evaluate(`document.getElementById('detail-pane').scrollTop = 0`, nil)); err != nil {
		t.Fatal(err)
	}
	screenshot(t, tab, "collection")

	// The shell in the analysis pod, at this collection's directory.
	dir := st.Destination[strings.Index(st.Destination, ":")+1:]
	if err := chromedp.Run(tab, chromedp.Click(`#shell-here`, chromedp.ByID), chromedp.WaitVisible(`#close:not([disabled])`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	// (busybox's prompt may leave a cursor position report before the line: no ^ anchor)
	typeLine(t, tab, `echo "HERE $(pwd) $(ls manifest.json)"`)
	waitText(t, tab, regexp.MustCompile(`(?m)HERE `+regexp.QuoteMeta(dir)+` manifest.json\s*$`))
	if err := chromedp.Run(tab, chromedp.Click(`#close`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}

	// Download: one archive, checked as it streams; its bytes match the manifest.
	if err := chromedp.Run(tab, chromedp.Click(`#download`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "the download's verification", `document.getElementById('download-result').innerText.startsWith('download VERIFIED')`, `document.getElementById('download-result').innerText`)
	archive := filepath.Join(downloads, ns+"_web_"+st.Collection+".tar")
	waitFor(t, time.Minute, "the downloaded archive", func(context.Context) (bool, error) {
		_, err := os.Stat(archive)
		return err == nil, nil
	})
	sums := tarSums(t, archive)
	for _, f := range m.Files {
		if got := sums[st.Collection+"/app"+f.Path]; got != f.SHA256 {
			t.Errorf("%s in the download: sha256 %s, manifest %s", f.Path, got, f.SHA256)
		}
	}
	if sums[st.Collection+"/manifest.json"] == "" || sums[st.Collection+"/custody.intoto.json"] == "" {
		t.Errorf("the archive lacks the manifest or the custody record: %v", sums)
	}

	// Another namespace: neither its pods nor its collections.
	if err := chromedp.Run(tab, chromedp.SetValue(`#ns`, other, chromedp.ByID), chromedp.Click(`#load`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "the other namespace refused", `document.getElementById('status').className === 'error' && document.getElementById('status').innerText.includes('forbidden')`, `document.getElementById('status').innerText`)
	var code int
	if err := chromedp.Run(tab, chromedp.Evaluate(`fetch('api/v1/console/collections?namespace=`+other+`&pod=db', {headers: {Authorization: 'Bearer ' + document.getElementById('token').value}}).then(r => r.status)`, &code,
		func(p *cdruntime.EvaluateParams) *cdruntime.EvaluateParams { return p.WithAwaitPromise(true) })); err != nil {
		t.Fatal(err)
	}
	if code != 403 {
		t.Errorf("collections of another namespace: HTTP %d, want 403", code)
	}

	// Tampered in the analysis pod: verify says FAILED and names the file, and so does a
	// download's check.
	mustRun(t, analysis(t), "sh", "-c", `printf planted >> "$1"`, "tamper", dir+"/app/var/log/mysql/slow.log")
	if err := chromedp.Run(tab, chromedp.SetValue(`#ns`, ns, chromedp.ByID), chromedp.Click(`#load`, chromedp.ByID), chromedp.Click(`#verify`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "FAILED after tampering", `document.getElementById('verify-result').innerText.startsWith('FAILED') && document.getElementById('verify-result').innerText.includes('MISMATCH /var/log/mysql/slow.log')`, `document.getElementById('verify-result').innerText`)
	screenshot(t, tab, "tampered")
	if err := chromedp.Run(tab, chromedp.Click(`#download`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	waitJS(t, tab, "the tampered download's verification", `document.getElementById('download-result').innerText.startsWith('download FAILED') && document.getElementById('download-result').innerText.includes('MISMATCH /var/log/mysql/slow.log')`, `document.getElementById('download-result').innerText`)
	metrics := scrape(t)
	if metrics[`podcopy_console_downloads_total{result="verified"}`] < 1 || metrics[`podcopy_console_downloads_total{result="failed"}`] < 1 {
		t.Errorf("download counters: verified %v failed %v", metrics[`podcopy_console_downloads_total{result="verified"}`], metrics[`podcopy_console_downloads_total{result="failed"}`])
	}

	// A follow started from the console, then stopped from it.
	if err := chromedp.Run(tab,
		chromedp.SetValue(`#paths`, "/var/log/app/a.log", chromedp.ByID),
		chromedp.Click(`#follow`, chromedp.ByID),
		chromedp.SetValue(`#interval`, "5s", chromedp.ByID),
		chromedp.Click(`#start`, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the follow running", func(context.Context) (bool, error) {
		s, ok := getStatus(t, ns, "web")
		return ok && s.Request != st.Request && s.Phase == status.Running && s.Collection == "follow", nil
	})
	if err := chromedp.Run(tab, chromedp.Click(`#stop`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, ns, "web", "FollowStopped")
	followed, _ := getStatus(t, ns, "web")
	if followed.Phase != status.Succeeded || !strings.HasSuffix(followed.RequestedBy, ":"+ns+":responder") {
		t.Fatalf("status after stop: %+v", followed)
	}

	// An intern without pods/exec is refused by admission, and told why.
	itab, closeIntern := chromedp.NewContext(tab)
	defer closeIntern()
	if err := chromedp.Run(itab,
		chromedp.Navigate(shellURL(t)),
		chromedp.SendKeys(`#token`, intern, chromedp.ByID),
		chromedp.SetValue(`#ns`, ns, chromedp.ByID),
		chromedp.Click(`#load`, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, itab, "the intern's pod list", `[...document.querySelectorAll('#pods tbody tr')].some(r => r.dataset.pod === 'web')`, `document.body.innerText`)
	if err := chromedp.Run(itab,
		clickNow(`#pods tr[data-pod="web"] button`),
		chromedp.SetValue(`#paths`, "/var/log/app/a.log", chromedp.ByID),
		chromedp.Click(`#start`, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	waitJS(t, itab, "the intern refused", `document.getElementById('status').innerText.startsWith('not started') && document.getElementById('status').innerText.includes('requires permission to create pods/exec')`, `document.getElementById('status').innerText`)
	if st2, _ := getStatus(t, ns, "web"); st2.Request != followed.Request {
		t.Errorf("the intern's refused request changed the pod's status: %+v", st2)
	}
}

// tarSums hashes every regular file of a tar archive.
func tarSums(t *testing.T, file string) map[string]string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	out := map[string]string{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		sum := sha256.New()
		if _, err := io.Copy(sum, tr); err != nil {
			t.Fatal(err)
		}
		out[h.Name] = hex.EncodeToString(sum.Sum(nil))
	}
}
