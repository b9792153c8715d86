//go:build e2e

package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// saToken makes a ServiceAccount in ns, binds rules to it in the analysis pod's namespace, and
// returns a token for it from the TokenRequest API.
func saToken(t *testing.T, ns, name string, rules ...rbacv1.PolicyRule) string {
	t.Helper()
	if _, err := client.CoreV1().ServiceAccounts(ns).Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	role := ns + "-" + name
	if len(rules) > 0 {
		if _, err := client.RbacV1().Roles("podcopy").Create(t.Context(), &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: role}, Rules: rules}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
		if _, err := client.RbacV1().RoleBindings("podcopy").Create(t.Context(), rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = client.RbacV1().RoleBindings("podcopy").Delete(context.Background(), role, metav1.DeleteOptions{})
			_ = client.RbacV1().Roles("podcopy").Delete(context.Background(), role, metav1.DeleteOptions{})
		})
	}
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name, &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

func shellURL(t *testing.T) string {
	t.Helper()
	local(t, "web shell (its port on this machine)")
	port, err := os.ReadFile(filepath.Join(state, "shell-port"))
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + agentAddr(t, firstNode, strings.TrimSpace(string(port))) + "/"
}

func browser(t *testing.T) context.Context {
	t.Helper()
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("chromium is not installed (make deps installs it): %v", err)
	}
	profile, err := os.MkdirTemp("", "podcopy-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(profile) })
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.UserDataDir(profile),
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.WindowSize(1200, 800))
	actx, cancelAlloc := chromedp.NewExecAllocator(t.Context(), opts...)
	t.Cleanup(cancelAlloc)
	return actx
}

var sizeRE = regexp.MustCompile(`(?m)^SIZE (\d+) (\d+)\s*$`)

func terminalText(ctx context.Context) (string, error) {
	var text string
	err := chromedp.Run(ctx, chromedp.Evaluate(`document.querySelector('.xterm-rows') ? document.querySelector('.xterm-rows').innerText : ''`, &text))
	return strings.ReplaceAll(text, "\u00a0", " "), err // the DOM renderer pads with no-break spaces
}

func waitText(t *testing.T, ctx context.Context, re *regexp.Regexp) []string {
	t.Helper()
	var m []string
	var text string
	defer func() {
		if t.Failed() {
			t.Logf("terminal shows:\n%s", text)
		}
	}()
	waitFor(t, 30*time.Second, "terminal output "+re.String(), func(context.Context) (bool, error) {
		var err error
		text, err = terminalText(ctx)
		if err != nil {
			return false, err
		}
		all := re.FindAllStringSubmatch(text, -1)
		if len(all) > 0 {
			m = all[len(all)-1]
		}
		return m != nil, nil
	})
	return m
}

func typeLine(t *testing.T, ctx context.Context, line string) {
	t.Helper()
	// Text arrives as one input event (as from an IME or a paste), Enter as a real key press.
	if err := chromedp.Run(ctx, chromedp.Focus(`.xterm-helper-textarea`, chromedp.ByQuery), input.InsertText(line), chromedp.KeyEvent(kb.Enter)); err != nil {
		t.Fatal(err)
	}
}

// TestWebShell drives the web shell in real headless Chromium against the agent on the real
// cluster: sign in, run a command, resize, be refused without pods/exec, close the tab.
func TestWebShell(t *testing.T) {
	ns := namespace(t)
	allowed := saToken(t, ns, "responder",
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}},
		rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}})
	denied := saToken(t, ns, "intern", rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get"}})
	actx := browser(t)
	quiet := chromedp.WithErrorf(func(string, ...any) {}) // cdproto lags Chromium's newest event fields
	tab, closeTab := chromedp.NewContext(actx, quiet)
	defer closeTab()
	tab, cancelTimeout := context.WithTimeout(tab, 3*time.Minute)
	defer cancelTimeout()

	var status string
	if err := chromedp.Run(tab,
		chromedp.Navigate(shellURL(t)),
		chromedp.WaitVisible(`#token`, chromedp.ByID),
		chromedp.SendKeys(`#token`, allowed, chromedp.ByID),
		chromedp.Click(`#open`, chromedp.ByID),
		chromedp.WaitVisible(`#close:not([disabled])`, chromedp.ByQuery),
		chromedp.Text(`#status`, &status, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "connected to podcopy/") {
		t.Fatalf("status %q", status)
	}
	typeLine(t, tab, `echo "podcopy-$((6*7))"; id -u`)
	waitText(t, tab, regexp.MustCompile(`(?m)^podcopy-42\s*$`))

	typeLine(t, tab, `echo "SIZE $(stty size)"`)
	before := waitText(t, tab, sizeRE)
	if err := chromedp.Run(tab, chromedp.EmulateViewport(700, 420)); err != nil {
		t.Fatal(err)
	}
	typeLine(t, tab, `clear; echo "SIZE $(stty size)"`)
	var after []string
	waitFor(t, 30*time.Second, "stty size to change", func(context.Context) (bool, error) {
		text, err := terminalText(tab)
		if err != nil {
			return false, err
		}
		all := sizeRE.FindAllStringSubmatch(text, -1)
		if len(all) > 0 && (all[len(all)-1][1] != before[1] || all[len(all)-1][2] != before[2]) {
			after = all[len(all)-1]
			return true, nil
		}
		typeLine(t, tab, `echo "SIZE $(stty size)"`)
		return false, nil
	})
	t.Logf("terminal resized from %sx%s to %sx%s (rows x cols)", before[1], before[2], after[1], after[2])

	var png []byte
	if err := chromedp.Run(tab, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatal(err)
	}
	shot, _ := filepath.Abs(filepath.Join(artifacts(), "e2e-webshell.png"))
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", shot)
	if got := scrape(t)["podcopy_shell_sessions"]; got != 1 {
		t.Errorf("podcopy_shell_sessions = %v with one tab open", got)
	}

	// A user without pods/exec is refused with a message that says so.
	other, closeOther := chromedp.NewContext(tab) // a second tab of the same browser
	defer closeOther()
	if err := chromedp.Run(other,
		chromedp.Navigate(shellURL(t)),
		chromedp.SendKeys(`#token`, denied, chromedp.ByID),
		chromedp.Click(`#open`, chromedp.ByID),
		chromedp.WaitVisible(`#status.error`, chromedp.ByQuery),
		chromedp.Text(`#status`, &status, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(status, "may not create pods/exec") {
		t.Fatalf("refused user's status %q", status)
	}
	closeOther()

	// Closing the tab ends the session on the agent.
	closeTab()
	waitFor(t, 30*time.Second, "podcopy_shell_sessions back to 0", func(context.Context) (bool, error) {
		return scrape(t)["podcopy_shell_sessions"] == 0, nil
	})
	m := scrape(t)
	if m[`podcopy_shell_sessions_total{result="forbidden"}`] < 1 || m[`podcopy_shell_sessions_total{result="ended"}`] < 1 {
		t.Errorf("session counters: forbidden %v ended %v", m[`podcopy_shell_sessions_total{result="forbidden"}`], m[`podcopy_shell_sessions_total{result="ended"}`])
	}
}
