package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/podcopy/podcopy/internal/config"
	"github.com/podcopy/podcopy/internal/signer"
	"github.com/podcopy/podcopy/pkg/custody"
)

// signerOptions are the flags of "podcopy-agent signer".
type signerOptions struct {
	Listen     string
	Namespace  string
	Secret     string
	Published  string
	Revoked    string
	Agents     []string
	Audience   string
	OwnNode    string
	Validity   time.Duration
	Issuer     string
	DNSNames   []string
	Kubeconfig string
	LogLevel   string
	LogFormat  string
}

func (o *signerOptions) bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", ":8443", "address of the certificate ("+signer.CertificatePath+") and timestamp ("+signer.TimestampPath+") routes, TLS")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the CA's Secret and the published ConfigMap")
	fs.StringVar(&o.Secret, "ca-secret", "podcopy-signer-ca", "Secret holding the CA and timestamp keys (created at first start; only the signer reads it)")
	fs.StringVar(&o.Published, "publish", config.DefaultPublicKeys, "ConfigMap the CA's and the timestamp authority's certificates are published in")
	fs.StringVar(&o.Revoked, "revocations", config.DefaultRevocations, "ConfigMap of revocations: a revoked node gets no new certificate")
	fs.StringSliceVar(&o.Agents, "agents", nil, "ServiceAccount user names that may ask for certificates (system:serviceaccount:NS:NAME)")
	fs.StringVar(&o.Audience, "audience", signer.DefaultAudience, "audience the agents' projected tokens are for")
	fs.StringVar(&o.OwnNode, "own-node", os.Getenv("NODE_NAME"), "the node the signer runs on: never certified")
	fs.DurationVar(&o.Validity, "validity", time.Hour, "lifetime of an agent certificate (renewed at half of it)")
	fs.StringVar(&o.Issuer, "issuer", signer.DefaultIssuer, "issuer written in agent certificates (cosign --certificate-oidc-issuer)")
	fs.StringSliceVar(&o.DNSNames, "dns-names", nil, "names of the signer's TLS certificate (its Service's)")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster)")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", "json", "json or console")
}

// Validate checks the options before anything starts.
func (o *signerOptions) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace is required (or POD_NAMESPACE)"))
	}
	if len(o.Agents) == 0 {
		errs = append(errs, errors.New("--agents is required: the agents' ServiceAccount user names"))
	}
	if o.OwnNode == "" {
		errs = append(errs, errors.New("--own-node is required (or NODE_NAME): the signer never certifies its own node"))
	}
	if o.Validity < 5*time.Minute || o.Validity > 24*time.Hour {
		errs = append(errs, fmt.Errorf("--validity %s: use 5m to 24h", o.Validity))
	}
	if len(o.DNSNames) == 0 {
		errs = append(errs, errors.New("--dns-names is required: the names agents reach the signer by"))
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", o.Listen, err))
	}
	return errors.Join(errs...)
}

// signerMain runs "podcopy-agent signer ..." and exits.
func signerMain(args []string) {
	var o signerOptions
	runMode("signer", args, o.bind, o.Validate, func(ctx context.Context) error { return runSigner(ctx, o) })
}

func runSigner(ctx context.Context, o signerOptions) error {
	var lo config.Options
	lo.Log.Level, lo.Log.Format = o.LogLevel, o.LogFormat
	log, err := newLogger(lo)
	if err != nil {
		return err
	}
	ctx = logr.NewContext(ctx, log)
	client, err := modeClient(o.Kubeconfig, "podcopy-signer", 20*time.Second)
	if err != nil {
		return err
	}
	now := time.Now()
	auth, created, err := signer.LoadOrCreate(ctx, client, o.Namespace, o.Secret, now)
	if err != nil {
		return fmt.Errorf("the signer's CA: %w", err)
	}
	for _, p := range []struct {
		entry string
		certs []*x509.Certificate
	}{{custody.SignerRootsEntry, []*x509.Certificate{auth.CA}}, {custody.TimestampRootsEntry, []*x509.Certificate{auth.TSA, auth.CA}}} {
		if err := custody.PublishCertificates(ctx, client, o.Namespace, o.Published, p.entry, p.certs); err != nil {
			return fmt.Errorf("publishing the signer's roots in %s/%s: %w", o.Namespace, o.Published, err)
		}
	}
	chain, key, err := auth.ServingCertificate(o.DNSNames, now)
	if err != nil {
		return err
	}
	s := &signer.Server{Authority: auth, Client: client, Audience: o.Audience, Agents: o.Agents, OwnNode: o.OwnNode,
		Validity: o.Validity, Issuer: o.Issuer, Namespace: o.Namespace, Revocations: o.Revoked, Log: log}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	tln := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key}}})
	log.Info("signer listening", "addr", ln.Addr().String(), "caCreated", created, "caSerial", fmt.Sprintf("%x", auth.CA.SerialNumber),
		"ownNode", o.OwnNode, "validity", o.Validity.String(), "agents", o.Agents, "version", version)
	g, gctx := errgroup.WithContext(ctx)
	serve(g, gctx, srv, tln, "", "", 10*time.Second)
	return g.Wait()
}
