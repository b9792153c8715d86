//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	sgroot "github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podcopy/podcopy/internal/signer"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/status"
)

const (
	agentNamespace = "podcopy"
	agentSA        = "podcopy-agent"
	signerCA       = "podcopy-signer-ca"
)

// signerInstalled says whether the chart installed the custody signer (hack/deploy.sh does
// on a cluster of three nodes: the third, the "system" node, runs it and no agent).
func signerInstalled(t *testing.T) bool {
	t.Helper()
	_, err := client.AppsV1().Deployments(agentNamespace).Get(t.Context(), "podcopy-agent-signer", metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// signerURL is the signer's address on this machine (it serves on the host network), and an
// HTTP client trusting the root the signer published.
func signerURL(t *testing.T) (string, *http.Client) {
	t.Helper()
	local(t, "the signer's port")
	port, err := os.ReadFile(filepath.Join(state, "signer-port"))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := custody.PublishedTrust(t.Context(), client, agentNamespace, "podcopy-signing-keys", "")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	for _, r := range tr.Roots {
		pool.AddCert(r)
	}
	return "https://127.0.0.1:" + strings.TrimSpace(string(port)), &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// agentToken is a token of the agent's ServiceAccount bound to the agent pod on node, for
// the signer's audience: what root on that node can take from the agent.
func agentToken(t *testing.T, node string) string {
	t.Helper()
	pod := agentOn(t, node)
	exp := int64(600)
	tr, err := client.CoreV1().ServiceAccounts(agentNamespace).CreateToken(t.Context(), agentSA, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{
		Audiences: []string{signer.DefaultAudience}, ExpirationSeconds: &exp,
		BoundObjectRef: &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// fetchRecord fetches pod's last collection into a directory and returns it with the status.
func fetchRecord(t *testing.T, ns, pod string) (string, status.Status) {
	t.Helper()
	st := waitFinal(t, ns, pod, "")
	if st.Phase != status.Succeeded {
		t.Fatalf("%s: %+v", pod, st)
	}
	dir := t.TempDir()
	if out, errOut, code := kubectlPodcopy(t, kubeconfig, "-n", ns, "fetch", pod, "-o", dir); code != 0 {
		t.Fatalf("fetch %s: exit %d\n%s%s", pod, code, out, errOut)
	}
	return filepath.Join(dir, st.Collection), st
}

// TestSigner (issue 36): with the signer installed by the chart, no long-lived key exists on
// a node. A collection's record is a Sigstore bundle carrying a certificate for its node and
// an RFC 3161 timestamp; the plugin verifies it online and offline; sigstore-go verifies it
// offline with the trusted root the plugin exports, and refuses a digest it does not sign.
// Node 2's agent token cannot get a certificate naming node 1, and a record signed with node
// 2's certificate that claims node 1 fails verify. After node 2 is revoked from T, its
// record signed before T still verifies and one signed after T fails. The agent's pod holds
// no private key (no Secret it mounts holds one; it may read neither the old key's Secret nor
// the signer's CA).
//
// Not parallel: the revocation of node 2 would fail other tests' verifies while it stands.
func TestSigner(t *testing.T) {
	if !signerInstalled(t) {
		t.Fatal("the custody signer is not installed: make cluster-up starts three nodes and hack/deploy.sh installs the signer on the third")
	}
	node2 := secondNode(t)
	ns := namespace(t)
	pinnedPod(t, ns, "on-one", firstNode, "mkdir -p /var/log/s && echo one > /var/log/s/a.log")
	pinnedPod(t, ns, "on-two", node2, "mkdir -p /var/log/s && echo two > /var/log/s/a.log")
	annotate(t, ns, "on-one", map[string]string{"podcopy/collect": "/var/log/s"})
	annotate(t, ns, "on-two", map[string]string{"podcopy/collect": "/var/log/s"})
	dir1, st1 := fetchRecord(t, ns, "on-one")
	dir2, st2 := fetchRecord(t, ns, "on-two")

	// The record: a bundle with a certificate naming node 1, and a timestamp.
	raw, err := os.ReadFile(filepath.Join(dir1, custody.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		MediaType            string `json:"mediaType"`
		VerificationMaterial struct {
			Certificate struct {
				RawBytes []byte `json:"rawBytes"`
			} `json:"certificate"`
			TimestampVerificationData struct {
				RFC3161Timestamps []json.RawMessage `json:"rfc3161Timestamps"`
			} `json:"timestampVerificationData"`
		} `json:"verificationMaterial"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(b.VerificationMaterial.Certificate.RawBytes)
	if err != nil {
		t.Fatalf("the record's certificate: %v (media type %q)", err, b.MediaType)
	}
	if node, _ := custody.CertNode(cert); node != firstNode || b.MediaType != custody.BundleMediaType || len(b.VerificationMaterial.TimestampVerificationData.RFC3161Timestamps) != 1 {
		t.Fatalf("record: media type %q, certificate of node %q, %d timestamps", b.MediaType, node, len(b.VerificationMaterial.TimestampVerificationData.RFC3161Timestamps))
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	t.Logf("record of %s: certificate %x for node %s, valid %s (%s to %s)", st1.Collection, cert.SerialNumber, firstNode, life, cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	if life > 2*time.Hour {
		t.Errorf("the agent's certificate lives %s", life)
	}
	if out, errOut, code := kubectlPodcopy(t, kubeconfig, "-n", ns, "verify", "on-one"); code != 0 || !strings.Contains(out, "of node "+firstNode+"'s certificate") || !strings.Contains(out, "timestamped") {
		t.Fatalf("verify: exit %d\n%s%s", code, out, errOut)
	}

	// Offline: the trust file (kubectl podcopy key) and the Sigstore trusted root.
	trustPEM, errOut, code := kubectlPodcopy(t, kubeconfig, "key")
	if code != 0 || !strings.Contains(trustPEM, custody.RoleHeader+": "+custody.RoleSignerRoot) {
		t.Fatalf("key: exit %d\n%s%s", code, trustPEM, errOut)
	}
	trustFile := filepath.Join(t.TempDir(), "trust.pem")
	must(t, os.WriteFile(trustFile, []byte(trustPEM), 0o644))
	rootJSON, errOut, code := kubectlPodcopy(t, kubeconfig, "key", "--trusted-root")
	if code != 0 {
		t.Fatalf("key --trusted-root: exit %d\n%s", code, errOut)
	}
	rootFile := filepath.Join(t.TempDir(), "trusted_root.json")
	must(t, os.WriteFile(rootFile, []byte(rootJSON), 0o644))
	for _, flags := range [][]string{{"--key", trustFile}, {"--trusted-root", rootFile}} {
		if out, errOut, code := kubectlPodcopy(t, nowhereKubeconfig(t), append([]string{"verify", dir1}, flags...)...); code != 0 || !strings.Contains(out, "verified 1 files") {
			t.Fatalf("offline verify %v: exit %d\n%s%s", flags, code, out, errOut)
		}
	}
	sigstoreVerify(t, rootJSON, raw, filepath.Join(dir1, custody.ManifestSubject))
	cosignVerify(t, rootFile, filepath.Join(dir1, custody.FileName), filepath.Join(dir1, custody.ManifestSubject))

	// Node binding at the signer: node 2's agent token, asking for node 1.
	url, hc := signerURL(t)
	key2, err := custody.GenerateEphemeralKey()
	if err != nil {
		t.Fatal(err)
	}
	tok2 := agentToken(t, node2)
	if code, body := askCertificate(t, hc, url, tok2, key2, firstNode); code != http.StatusForbidden || !strings.Contains(body, "WrongNode") {
		t.Fatalf("node 2's token asking for node 1: %d %s", code, body)
	} else {
		t.Logf("node 2's token asking for a certificate naming node 1: refused: %s", strings.TrimSpace(body))
	}
	// A record signed with node 2's certificate (what root on node 2 can get) that claims
	// node 1, over node 1's collection: verify names it.
	tokFile := filepath.Join(t.TempDir(), "token")
	must(t, os.WriteFile(tokFile, []byte(tok2), 0o600))
	c2 := &signer.Client{URL: url, TLSRoots: func(context.Context) (*x509.CertPool, error) {
		return hc.Transport.(*http.Transport).TLSClientConfig.RootCAs, nil
	}, TokenFile: tokFile, Node: node2, Key: key2}
	forged := resealAs(t, raw, key2.Certified(c2))
	forgedDir := copyDir(t, dir1)
	must(t, os.WriteFile(filepath.Join(forgedDir, custody.FileName), forged, 0o644))
	if _, errOut, code := kubectlPodcopy(t, nowhereKubeconfig(t), "verify", forgedDir, "--key", trustFile); code == 0 || !strings.Contains(errOut, "signed with node "+node2+"'s certificate") {
		t.Fatalf("verify of node 1's record re-signed with node 2's certificate: exit %d\n%s", code, errOut)
	} else {
		t.Logf("node 1's record re-signed with node 2's certificate: %s", firstLine(errOut, "signed with node"))
	}

	// Revocation of node 2 from T: its record from before T still verifies, one after fails.
	// T is the next whole second: after node 2's first record's timestamp; the next record,
	// made once T has passed, is timestamped after it.
	revokedAt := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(revokedAt) + 100*time.Millisecond)
	if out, errOut, code := kubectlPodcopy(t, kubeconfig, "revoke", "--node", node2, "--from", revokedAt.Format(time.RFC3339), "--reason", "e2e: node 2 compromised"); code != 0 {
		t.Fatalf("revoke: exit %d\n%s%s", code, out, errOut)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().ConfigMaps(agentNamespace).Delete(context.Background(), "podcopy-revocations", metav1.DeleteOptions{})
	})
	if out, errOut, code := kubectlPodcopy(t, kubeconfig, "verify", dir2); code != 0 {
		t.Fatalf("node 2's record signed before the revocation: exit %d\n%s%s", code, out, errOut)
	}
	annotate(t, ns, "on-two", map[string]string{"podcopy/collect": "/var/log/s/a.log"})
	st := waitFinal(t, ns, "on-two", st2.Request)
	if st.Phase != status.Succeeded {
		t.Fatalf("on-two again: %+v", st)
	}
	if _, errOut, code := kubectlPodcopy(t, kubeconfig, "-n", ns, "verify", "on-two"); code == 0 || !strings.Contains(errOut, "REVOKED: node "+node2+" is revoked from "+revokedAt.Format(time.RFC3339)) {
		t.Fatalf("verify of node 2's record signed after its revocation: exit %d\n%s", code, errOut)
	} else {
		t.Logf("after the revocation: %s", firstLine(errOut, "REVOKED"))
	}
	revs, _, _ := kubectlPodcopy(t, kubeconfig, "key", "--revocations")
	revFile := filepath.Join(t.TempDir(), "revocations.yaml")
	must(t, os.WriteFile(revFile, []byte(revs), 0o644))
	if _, _, code := kubectlPodcopy(t, nowhereKubeconfig(t), "verify", dir2, "--key", trustFile, "--revocations", revFile); code != 0 {
		t.Fatal("offline verify with the revocations: node 2's record from before T fails")
	}

	// No private key on the agent's pod (no Secret it mounts holds one where it is mounted),
	// and no right to one.
	for _, node := range []string{firstNode, node2} {
		pod := agentOn(t, node)
		for _, v := range pod.Spec.Volumes {
			if v.Secret == nil {
				continue
			}
			s, err := client.CoreV1().Secrets(agentNamespace).Get(t.Context(), v.Secret.SecretName, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			mounted := map[string]bool{} // the keys the kubelet writes into the pod (all, without items)
			for _, it := range v.Secret.Items {
				mounted[it.Key] = true
			}
			for k, val := range s.Data {
				if (len(mounted) == 0 || mounted[k]) && bytes.Contains(val, []byte("PRIVATE KEY")) {
					t.Errorf("the agent on %s mounts Secret %s, whose %s holds a private key", node, s.Name, k)
				}
			}
		}
	}
	user := "system:serviceaccount:" + agentNamespace + ":" + agentSA
	for _, a := range []authzv1.ResourceAttributes{
		{Namespace: agentNamespace, Verb: "get", Resource: "secrets", Name: "podcopy-signing-key"},
		{Namespace: agentNamespace, Verb: "get", Resource: "secrets", Name: signerCA},
		{Namespace: agentNamespace, Verb: "update", Resource: "configmaps", Name: "podcopy-signing-keys"},
		{Namespace: agentNamespace, Verb: "update", Resource: "configmaps", Name: "podcopy-revocations"},
	} {
		r, err := client.AuthorizationV1().SubjectAccessReviews().Create(t.Context(), &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: user, ResourceAttributes: &a}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed {
			t.Errorf("the agent's ServiceAccount may %s %s %s", a.Verb, a.Resource, a.Name)
		}
	}
	if _, err := client.CoreV1().Secrets(agentNamespace).Get(t.Context(), "podcopy-signing-key", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the long-lived signing key's Secret exists with the signer installed (%v)", err)
	}
}

// sigstoreVerify checks record with sigstore-go against the trusted root: for the file's
// digest and node 1's identity it verifies; for a digest it does not sign it fails.
func sigstoreVerify(t *testing.T, rootJSON string, record []byte, file string) {
	t.Helper()
	tr, err := sgroot.NewTrustedRootFromJSON([]byte(rootJSON))
	if err != nil {
		t.Fatal(err)
	}
	var b sgbundle.Bundle
	if err := b.UnmarshalJSON(record); err != nil {
		t.Fatal(err)
	}
	v, err := sgverify.NewVerifier(tr, sgverify.WithSignedTimestamps(1))
	if err != nil {
		t.Fatal(err)
	}
	id, err := sgverify.NewShortCertificateIdentity(signer.DefaultIssuer, "", custody.NodeURI(firstNode), "")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	res, err := v.Verify(&b, sgverify.NewPolicy(sgverify.WithArtifactDigest("sha256", sum[:]), sgverify.WithCertificateIdentity(id)))
	if err != nil {
		t.Fatalf("sigstore-go refused the record: %v", err)
	}
	t.Logf("sigstore-go verified the record offline for %s (sha256 %s): %d signed timestamp(s)", filepath.Base(file), hex.EncodeToString(sum[:8]), len(res.VerifiedTimestamps))
	data = append(data, ' ')
	sum = sha256.Sum256(data)
	if _, err := v.Verify(&b, sgverify.NewPolicy(sgverify.WithArtifactDigest("sha256", sum[:]), sgverify.WithCertificateIdentity(id))); err == nil {
		t.Fatal("sigstore-go verified a tampered file's digest")
	}
}

// cosignVerify runs cosign (hack/cosign.sh builds it into the cache; make e2e does first)
// on the record as a bundle with the exported trusted root: it verifies the file, and
// refuses the file changed by one byte.
func cosignVerify(t *testing.T, rootFile, record, file string) {
	t.Helper()
	local(t, "cosign from the cache")
	bin := filepath.Join(filepath.Dir(state), "cosign-v2.6.5", "cosign")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("cosign is not built (bash hack/cosign.sh version builds it; make e2e does): %v", err)
	}
	verify := func(f string) (string, error) {
		cmd := osexec.CommandContext(t.Context(), bin, "verify-blob-attestation", "--bundle", record, "--trusted-root", rootFile,
			"--use-signed-timestamps", "--insecure-ignore-tlog", "--insecure-ignore-sct", "--type", custody.PredicateType,
			"--certificate-identity", custody.NodeURI(firstNode), "--certificate-oidc-issuer", signer.DefaultIssuer, f)
		cmd.Env = append(os.Environ(), "SIGSTORE_NO_CACHE=true", "TUF_ROOT="+t.TempDir(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := verify(file)
	if err != nil {
		t.Fatalf("cosign refused the record: %v\n%s", err, out)
	}
	t.Logf("cosign %s: %s", filepath.Base(file), firstLine(out, "Verified"))
	data, err := os.ReadFile(file)
	must(t, err)
	tampered := filepath.Join(t.TempDir(), filepath.Base(file))
	must(t, os.WriteFile(tampered, append(data, ' '), 0o644))
	if out, err := verify(tampered); err == nil {
		t.Fatalf("cosign verified a tampered file:\n%s", out)
	} else {
		t.Logf("cosign on the file changed by one byte: %v: %s", err, strings.TrimSpace(lastLine(out)))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// askCertificate asks the signer for a certificate for key naming node, with token.
func askCertificate(t *testing.T, hc *http.Client, url, token string, key *custody.PrivateKey, node string) (int, string) {
	t.Helper()
	pub, err := x509.MarshalPKIXPublicKey(key.Public().Public())
	if err != nil {
		t.Fatal(err)
	}
	proof, err := key.Sign(t.Context(), []byte(signer.ProofPrefix+node))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(signer.Request{Node: node, PublicKey: pub, Proof: proof})
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, url+signer.CertificatePath, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return resp.StatusCode, string(data)
}

// resealAs signs the statement of record (a bundle) again with key: the same subjects and
// predicate, another signer.
func resealAs(t *testing.T, record []byte, key *custody.PrivateKey) []byte {
	t.Helper()
	var b struct {
		DSSE struct {
			Payload []byte `json:"payload"`
		} `json:"dsseEnvelope"`
	}
	must(t, json.Unmarshal(record, &b))
	var st struct {
		Subject []struct {
			Name   string            `json:"name"`
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		Predicate custody.Predicate `json:"predicate"`
	}
	must(t, json.Unmarshal(b.DSSE.Payload, &st))
	var subjects []custody.Subject
	for _, s := range st.Subject {
		subjects = append(subjects, custody.Subject{Name: s.Name, SHA256: s.Digest["sha256"]})
	}
	out, err := custody.Seal(t.Context(), key, subjects, st.Predicate)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	must(t, os.CopyFS(dst, os.DirFS(src)))
	return dst
}

func firstLine(s, with string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, with) {
			return strings.TrimSpace(l)
		}
	}
	return fmt.Sprintf("(no line with %q)", with)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
