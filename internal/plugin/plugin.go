// Package plugin is kubectl-podcopy, the kubectl plugin that speaks podcopy's contract
// (SPEC §8) with the user's own kubeconfig and credentials: it sets the request annotations
// (admission checks the user's exec right and records who asked), draws progress from the
// status, lists collections, and fetches or verifies them against their manifests.
package plugin

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/evidence"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/verify"
)

// Options are the flags every verb shares.
type Options struct {
	config *genericclioptions.ConfigFlags
	// Output is "" (human) or "json".
	Output string
	// AnalysisNamespace, AnalysisSelector and Dir find collections that the pod's status no
	// longer names (the agent's destination.namespace, .selector and .dir).
	AnalysisNamespace, AnalysisSelector, Dir string
	// SigningKeys is the ConfigMap of the published custody keys (NAME in
	// AnalysisNamespace, or NS/NAME); KeyFiles, when set, are used instead (--key).
	SigningKeys string
	KeyFiles    []string
	// KeySource, when set (a server), gives the keys instead of KeyFiles and SigningKeys:
	// published is false when the cluster does not sign.
	KeySource func(ctx context.Context) (trust custody.Trust, published bool, err error)
	// TrustedRoot and RevocationsFile are --trusted-root and --revocations; Revocations is
	// the cluster's revocations ConfigMap (in the keys' namespace).
	TrustedRoot, RevocationsFile, Revocations string
	// S3Endpoint, S3Region and S3CA reach a bucket for s3:// collections (credentials: the
	// AWS environment and profiles).
	S3Endpoint, S3Region, S3CA string
	// Expect and ExpectUID name the collection an offline verify expects (--expect
	// NS/POD[/ID], --expect-uid).
	Expect, ExpectUID string
	// MaxManifestBytes and MaxRecordBytes bound the manifest and custody record read of
	// each collection (0: 64 MiB each; a server sets the agent's own caps).
	MaxManifestBytes, MaxRecordBytes int

	Out, Err io.Writer
	// Terminal reports whether progress may be drawn (stderr is a terminal).
	Terminal bool
	// Stall is how long fetch and verify wait for the analysis pod's next output (5 minutes
	// when zero).
	Stall time.Duration

	// set by complete()
	client    kubernetes.Interface
	exec      exec.Executor
	namespace string
}

// evidence is the evidence reader with o's clients, its flags and its keys.
// Evidence is the evidence library as these options read: the user's clients, the analysis
// pods and keys the flags name (the e2e suite reads through it with its own sinks).
func (o *Options) Evidence() *evidence.Reader { return o.evidence() }

func (o *Options) evidence() *evidence.Reader {
	return &evidence.Reader{Client: o.client, Exec: o.exec, Namespace: o.namespace,
		AnalysisNamespace: o.AnalysisNamespace, AnalysisSelector: o.AnalysisSelector, Dir: o.Dir,
		Keys: o.verifyKeys, S3: o.s3Client, MaxManifestBytes: o.MaxManifestBytes, MaxRecordBytes: o.MaxRecordBytes, Stall: o.Stall}
}

// Row is one collection in ls (and in the web console).
type Row = evidence.Row

// Result is what a fetch, a download or a verification found: the verifier's verdict.
type Result = verify.Verdict

// NewOptions are the options of a plugin writing to out and errOut.
func NewOptions(out, errOut io.Writer) *Options {
	return &Options{config: genericclioptions.NewConfigFlags(true), Out: out, Err: errOut, Terminal: isTerminal(errOut), SigningKeys: DefaultSigningKeys, Revocations: DefaultRevocations}
}

// NewCommand is the root command (kubectl podcopy) over o.
func NewCommand(o *Options) *cobra.Command {
	root := &cobra.Command{
		Use:           "kubectl-podcopy",
		Short:         "Collect files from pods into the podcopy analysis pod, watch, fetch and verify them",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	o.config.AddFlags(root.PersistentFlags())
	def := destination.Defaults() // the agent's own defaults
	root.PersistentFlags().StringVar(&o.AnalysisNamespace, "analysis-namespace", def.Namespace, "namespace of the analysis pods (the agent's destination.namespace)")
	root.PersistentFlags().StringVar(&o.AnalysisSelector, "analysis-selector", def.Selector, "label selector of the analysis pods")
	root.PersistentFlags().StringVar(&o.Dir, "dir", def.Dir, "base directory in the analysis pod (the agent's destination.dir)")
	root.PersistentFlags().StringVar(&o.S3Endpoint, "s3-endpoint", "", "S3 endpoint for s3:// collections (default $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS)")
	root.PersistentFlags().StringVar(&o.S3Region, "s3-region", os.Getenv("AWS_REGION"), "S3 region for s3:// collections")
	root.PersistentFlags().StringVar(&o.S3CA, "s3-ca", "", "PEM bundle that verifies the S3 endpoint (default: the system's, and $AWS_CA_BUNDLE)")
	root.PersistentFlags().StringVar(&o.Revocations, "revocations-configmap", DefaultRevocations, "ConfigMap of the revocations (cluster admins write it: kubectl podcopy revoke), in the signing keys' namespace")
	root.PersistentFlags().StringVar(&o.SigningKeys, "signing-keys", DefaultSigningKeys, "ConfigMap of the agents' published custody keys: NAME in --analysis-namespace, or NAMESPACE/NAME (the agent's signing.publicKeys)")
	for _, c := range []*cobra.Command{o.collectCommand(), o.statusCommand(), o.lsCommand(), o.verifyCommand(), o.stopCommand()} {
		c.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json for scripts (default: human-readable)")
		root.AddCommand(c)
	}
	root.AddCommand(o.fetchCommand(), o.keyCommand(), o.revokeCommand()) // fetch's -o is the directory (SPEC §8)
	return root
}

// Main runs the plugin with args and returns the process exit code.
func Main(ctx context.Context, args []string) int {
	cmd := NewCommand(NewOptions(os.Stdout, os.Stderr))
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "error:", printableLines(err.Error()))
		return 1
	}
	return 0
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// complete builds the clients from the user's kubeconfig.
func (o *Options) complete() error {
	if o.client != nil {
		return nil
	}
	if o.Output != "" && o.Output != "json" {
		return fmt.Errorf("--output %q is unknown; use json", o.Output)
	}
	cfg, err := o.config.ToRESTConfig()
	if err != nil {
		return err
	}
	ns, _, err := o.config.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	o.client, o.namespace = cs, ns
	o.exec = exec.NewRemote(rest.CopyConfig(cfg), cs.CoreV1().RESTClient(), exec.TransportAuto)
	return nil
}

// With sets the clients directly instead of from the kubeconfig flags: a server acting with
// a user's own clients (the console's Ask and Stop), and tests.
func (o *Options) With(client kubernetes.Interface, ex exec.Executor, namespace string) *Options {
	o.client, o.exec, o.namespace = client, ex, namespace
	return o
}

// printableLines escapes control characters line by line (an error may hold several
// lines; each may quote what a container or a pod's status said).
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = status.Printable(l)
	}
	return strings.Join(lines, "\n")
}
