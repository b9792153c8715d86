package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/internal/alert"
	"github.com/podcopy/podcopy/internal/config"
)

// receiverOptions are the flags of "podcopy-agent receiver".
type receiverOptions struct {
	Listen         string
	TLSCertFile    string
	TLSKeyFile     string
	AllowPlainHTTP bool
	TokenFile      string
	ProfilesFile   string
	Kubeconfig     string
	Namespaces     []string
	LogLevel       string
	LogFormat      string
}

func (o *receiverOptions) bind(fs *pflag.FlagSet) {
	fs.StringVar(&o.Listen, "listen", ":8443", "address of the webhooks (/v1/falco, /v1/alertmanager), /healthz and /metrics")
	fs.StringVar(&o.TLSCertFile, "tls-cert-file", "", "PEM certificate the webhooks are served with")
	fs.StringVar(&o.TLSKeyFile, "tls-key-file", "", "PEM key of --tls-cert-file")
	fs.BoolVar(&o.AllowPlainHTTP, "allow-plain-http", false, "serve without TLS (only behind a TLS-terminating proxy)")
	fs.StringVar(&o.TokenFile, "token-file", "", "file holding the bearer token senders must present (a Secret's key)")
	fs.StringVar(&o.ProfilesFile, "profiles", "/etc/podcopy-receiver/profiles.yaml", "profile file (a ConfigMap's key), re-read when it changes")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig (default: in-cluster)")
	fs.StringSliceVar(&o.Namespaces, "namespaces", nil, "namespaces the receiver may request collections in (default: all)")
	fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.LogFormat, "log-format", "json", "json or console")
}

// Validate checks the options before anything starts.
func (o *receiverOptions) Validate() error {
	var errs []error
	if o.TokenFile == "" {
		errs = append(errs, errors.New("--token-file is required: senders authenticate with its bearer token"))
	}
	if (o.TLSCertFile == "") != (o.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file go together"))
	}
	if o.TLSCertFile == "" && !o.AllowPlainHTTP {
		errs = append(errs, errors.New("--tls-cert-file and --tls-key-file are required (or --allow-plain-http behind a TLS proxy)"))
	}
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		errs = append(errs, fmt.Errorf("--listen %q: %w", o.Listen, err))
	}
	return errors.Join(errs...)
}

// receiverAPITimeout bounds each API request the receiver makes for an alert.
const receiverAPITimeout = 20 * time.Second

// receiverMain runs "podcopy-agent receiver ..." and exits.
func receiverMain(args []string) {
	fs := pflag.NewFlagSet("podcopy-agent receiver", pflag.ExitOnError)
	var o receiverOptions
	o.bind(fs)
	_ = fs.Parse(args)
	if err := o.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "podcopy-agent receiver: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := runReceiver(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "podcopy-agent receiver: %v\n", err)
		os.Exit(1)
	}
}

func runReceiver(ctx context.Context, o receiverOptions) error {
	var lo config.Options
	lo.Log.Level, lo.Log.Format = o.LogLevel, o.LogFormat
	log, err := newLogger(lo)
	if err != nil {
		return err
	}
	ctx = logr.NewContext(ctx, log)
	token, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	token = bytes.TrimSpace(token)
	if len(token) < 16 {
		return fmt.Errorf("--token-file %s holds %d bytes; use a random token of at least 16", o.TokenFile, len(token))
	}
	profiles := &profileFile{path: o.ProfilesFile}
	if _, err := profiles.Load(); err != nil {
		return err
	}
	rc, err := restConfig(o.Kubeconfig)
	if err != nil {
		return err
	}
	rc.UserAgent = "podcopy-receiver/" + version
	rc.Timeout = receiverAPITimeout // every GET and patch has a deadline, whatever the sender does
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	recv := &alert.Receiver{Token: token, Profiles: profiles.Load, Client: client, Namespaces: o.Namespaces, Metrics: alert.NewMetrics(reg)}
	mux := http.NewServeMux()
	mux.Handle("/", recv.Handler())
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Addr: o.Listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	if o.TLSCertFile != "" {
		srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	log.Info("alert receiver listening", "addr", ln.Addr().String(), "tls", o.TLSCertFile != "", "profiles", o.ProfilesFile, "version", version)
	g, gctx := errgroup.WithContext(ctx)
	serve(g, gctx, srv, ln, o.TLSCertFile, o.TLSKeyFile, 10*time.Second)
	return g.Wait()
}

// profileFile is the profile file, re-read when its size or modification time changes (a
// mounted ConfigMap is replaced as a whole). A file that stops parsing keeps the last good
// profiles and reports the error in the log.
type profileFile struct {
	path string
	mu   sync.Mutex
	mod  time.Time
	size int64
	good *alert.Profiles
}

// Load returns the current profiles.
func (p *profileFile) Load() (alert.Profiles, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fi, err := os.Stat(p.path)
	if err != nil {
		if p.good != nil {
			return *p.good, nil
		}
		return alert.Profiles{}, fmt.Errorf("--profiles: %w", err)
	}
	if p.good != nil && fi.ModTime().Equal(p.mod) && fi.Size() == p.size {
		return *p.good, nil
	}
	data, err := os.ReadFile(p.path)
	if err == nil {
		var prof alert.Profiles
		if prof, err = alert.ParseProfiles(data); err == nil {
			p.good, p.mod, p.size = &prof, fi.ModTime(), fi.Size()
			return prof, nil
		}
	}
	if p.good != nil {
		return *p.good, nil
	}
	return alert.Profiles{}, fmt.Errorf("--profiles %s: %w", p.path, err)
}
