package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/podcopy/podcopy/internal/alert"
	"github.com/podcopy/podcopy/internal/config"
	"github.com/podcopy/podcopy/internal/metrics"
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

// profilesPoll is how often the receiver looks for a changed profiles file between alerts.
const profilesPoll = 10 * time.Second

// receiverAPITimeout bounds each API request the receiver makes for an alert.
const receiverAPITimeout = 20 * time.Second

// receiverMain runs "podcopy-agent receiver ..." and exits.
func receiverMain(args []string) {
	var o receiverOptions
	runMode("receiver", args, o.bind, o.Validate, func(ctx context.Context) error { return runReceiver(ctx, o) })
}

// runMode runs one of podcopy-agent's modes and exits: its flags parsed and validated
// (exit 2 naming what is wrong), then run with a context that ends at SIGTERM or an
// interrupt (exit 1 on an error).
func runMode(name string, args []string, bind func(*pflag.FlagSet), validate func() error, run func(context.Context) error) {
	fs := pflag.NewFlagSet("podcopy-agent "+name, pflag.ExitOnError)
	bind(fs)
	_ = fs.Parse(args)
	if err := validate(); err != nil {
		fmt.Fprintf(os.Stderr, "podcopy-agent %s: %v\n", name, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "podcopy-agent %s: %v\n", name, err)
		os.Exit(1)
	}
}

// modeClient is a mode's API client: its kubeconfig (in-cluster when ""), its user agent,
// and a deadline on every request.
func modeClient(kubeconfig, userAgent string, timeout time.Duration) (kubernetes.Interface, error) {
	rc, err := restConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	rc.UserAgent = userAgent + "/" + version
	rc.Timeout = timeout
	return kubernetes.NewForConfig(rc)
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	profiles := &profileFile{path: o.ProfilesFile, log: log, reloads: metrics.NewReloads(reg, "profiles"), now: time.Now}
	if _, err := profiles.Load(); err != nil {
		return err
	}
	// Every GET and patch has a deadline, whatever the sender does.
	client, err := modeClient(o.Kubeconfig, "podcopy-receiver", receiverAPITimeout)
	if err != nil {
		return err
	}
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
	// Re-read between alerts too, so a reload is logged and counted when the file changes.
	g.Go(func() error {
		wait.UntilWithContext(gctx, func(context.Context) { _, _ = profiles.Load() }, profilesPoll)
		return nil
	})
	return g.Wait()
}

// profileFile is the profile file, re-read when its size or modification time changes (a
// mounted ConfigMap is replaced as a whole). A file that stops parsing keeps the last good
// profiles; every load, reload and refusal is logged once and counted (podcopy_config_*,
// file="profiles").
type profileFile struct {
	path    string
	log     logr.Logger
	reloads *metrics.Reloads // nil: not counted
	now     func() time.Time

	mu      sync.Mutex
	mod     time.Time
	size    int64
	good    *alert.Profiles
	refused string // the contents last refused (mod and size), logged once
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
	mark := fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
	if p.good != nil && mark == p.refused {
		return *p.good, nil // refused already: logged and counted once
	}
	data, err := os.ReadFile(p.path)
	if err == nil {
		var prof alert.Profiles
		if prof, err = alert.ParseProfiles(data); err == nil {
			sum := sha256.Sum256(data)
			hash := hex.EncodeToString(sum[:])
			prof.Loaded = fmt.Sprintf("profiles file %s, sha256 %s, loaded %s", p.path, hash[:12], p.now().UTC().Format(time.RFC3339))
			reload := p.good != nil
			p.good, p.mod, p.size, p.refused = &prof, fi.ModTime(), fi.Size(), ""
			if p.reloads != nil {
				p.reloads.Loaded(hash, reload)
			}
			what := "profiles loaded"
			if reload {
				what = "profiles reloaded"
			}
			p.log.Info(what, "file", p.path, "sha256", hash, "profiles", len(prof.Profiles), "dedupWindow", prof.DedupWindow.String(), "ratePerMinute", prof.RatePerMinute)
			return prof, nil
		}
	}
	p.refused = mark
	if p.reloads != nil {
		p.reloads.Refused()
	}
	if p.good != nil {
		p.log.Error(err, "profiles file changed but is invalid; keeping the previous profiles", "file", p.path, "inUse", p.good.Loaded)
		return *p.good, nil
	}
	return alert.Profiles{}, fmt.Errorf("--profiles %s: %w", p.path, err)
}
