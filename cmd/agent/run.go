package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/podcopy/podcopy/internal/collect"
	"github.com/podcopy/podcopy/internal/config"
	"github.com/podcopy/podcopy/internal/console"
	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/executor"
	"github.com/podcopy/podcopy/internal/helpercontainer"
	"github.com/podcopy/podcopy/internal/lease"
	"github.com/podcopy/podcopy/internal/metrics"
	"github.com/podcopy/podcopy/internal/nodeloss"
	"github.com/podcopy/podcopy/internal/objstore"
	"github.com/podcopy/podcopy/internal/podrecord"
	"github.com/podcopy/podcopy/internal/shell"
	"github.com/podcopy/podcopy/internal/signer"
	"github.com/podcopy/podcopy/internal/sweep"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/request"
	"github.com/podcopy/podcopy/pkg/ship"
	"github.com/podcopy/podcopy/pkg/status"
	"github.com/podcopy/podcopy/pkg/watch"
)

// settings is the hot-reloadable part of the configuration.
type settings struct {
	policy policy.Policy
	limits ship.Limits
}

func run(ctx context.Context, opts config.Options, loader *config.Loader) error {
	log, err := newLogger(opts)
	if err != nil {
		return err
	}
	klog.SetLogger(log.WithName("client-go"))
	ctx = logr.NewContext(ctx, log)

	if opts.Mode == config.ModeSidecar {
		return runSidecar(ctx) // needs no credentials
	}
	restConfig, err := restConfig(opts.Kubeconfig)
	if err != nil {
		return err
	}
	restConfig.UserAgent = "podcopy-agent/" + version
	// client-go's default (5 QPS) throttles a busy node: each collection makes about seven
	// API calls (status twice, two Events, the destination list, two execs).
	restConfig.QPS, restConfig.Burst = opts.KubeQPS, int(2*opts.KubeQPS)
	m := metrics.New()
	m.Config.Loaded(opts.ConfigSHA256, false)
	// REST calls are counted (podcopy_api_requests_total); exec streams use restConfig as is.
	apiConfig := rest.CopyConfig(restConfig)
	apiConfig.Wrap(m.CountRequests)
	client, err := kubernetes.NewForConfig(apiConfig)
	if err != nil {
		return err
	}
	transport, _ := exec.ParseTransport(opts.Exec.Transport)

	var current atomic.Pointer[settings]
	current.Store(reloadable(opts))

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	node := opts.NodeName
	if node == "" {
		node, _ = os.Hostname()
	}
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "podcopy-agent", Host: node})

	// The analysis pods come from an informer's cache (listers, not a LIST per collection).
	dstFactory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Destination.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = opts.Destination.Selector }),
		informers.WithTransform(watch.Transform))
	dstLister := dstFactory.Core().V1().Pods().Lister().Pods(opts.Destination.Namespace)
	dstFactory.Start(ctx.Done())
	defer dstFactory.Shutdown()
	for typ, ok := range dstFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("the cache of %v in %s did not sync", typ, opts.Destination.Namespace)
		}
	}
	chooser := destination.Chooser{Client: client, Config: opts.Destination, Lister: dstLister}
	// This agent's Node's Ready condition (every Node's when it serves all nodes): a failure
	// on a node that is not Ready says so (NodeUnreachable). Only the janitor's Lease holder
	// watches every Node (below): at 5,000 nodes, 5,000 agents watching every Node would
	// multiply each Node status update by 5,000 (docs/scale.md).
	nodes, stopNodes := nodeLister(ctx, log, client, opts.NodeName)
	defer stopNodes()
	nodeState := func(name string) string { return nodeloss.Unreachable(nodes, name, time.Now()) }
	key, err := signingKey(ctx, log, client, opts)
	if err != nil {
		return err
	}
	var bucket *objstore.Store
	if opts.Destination.S3.Enabled() {
		if bucket, err = objstore.New(ctx, opts.Destination.S3); err != nil {
			return fmt.Errorf("destination.s3: %w", err)
		}
		log.Info("collections are written to the bucket", "bucket", opts.Destination.S3.Bucket, "endpoint", opts.Destination.S3.Endpoint,
			"mode", opts.Destination.EffectiveMode(), "objectLock", opts.Destination.S3.ObjectLock)
	}
	spool, _ := opts.SpoolBudget()                                                // checked by Validate
	sourceSpool, _ := opts.SourceSpoolShare()                                     // checked by Validate
	memberMax, bundleMax, bundleMembers, _ := opts.Destination.S3.Bundles.Sizes() // checked by Validate
	remote := m.CountExecs(exec.NewRemote(restConfig, client.CoreV1().RESTClient(), transport))
	// The executor runs every collection, within concurrency; the controller only decides.
	work := executor.New(opts.Concurrency)
	m.WatchWork(func() metrics.Work {
		st := work.Stats()
		return metrics.Work{Queued: st.Queued, OldestRunning: st.OldestRunning, OldestQueued: st.OldestQueued}
	})
	handler := &collect.Handler{
		Runner: &ship.Shipper{Exec: remote, SpoolDir: opts.SpoolDir, Stall: opts.Exec.StallTimeout, Spool: spool,
			Heartbeat: ship.HeartbeatFor(opts.Destination.StaleAfter),
			// The source spools of all collections in flight share sourceSpoolMaxBytes of the
			// spool volume.
			SourceSpool: sourceSpool,
			SpoolMeter:  ship.SpoolMeter{Bytes: m.SourceSpooled, Waits: m.SourceSpoolWaits},
			Bundles: &ship.BundleOptions{MemberMaxBytes: memberMax, MaxBytes: bundleMax, MaxMembers: bundleMembers,
				InFlight: ship.DefaultBundles.InFlight}},
		Exec:     remote,
		Chooser:  chooser,
		Status:   status.PatchWriter{Client: client},
		Recorder: recorder,
		Metrics:  m,
		Settings: collect.Settings{
			Policy:      func() policy.Policy { return current.Load().policy },
			Limits:      func() ship.Limits { return current.Load().limits },
			Dir:         opts.Destination.Dir,
			Compression: opts.Compression,
			Agent:       manifest.Agent{Version: version, Node: node},
			Attempts:    opts.Retry.Attempts,
			Source:      request.Source(opts.Source.Mode),
			Quota:       opts.Destination.Quota,
			Custody:     key,
			Bucket:      bucket,
			Mode:        opts.Destination.ModeFor,
		},
		Work: work,
		Helpers: &helpercontainer.Courier{Client: client, Image: (&helpercontainer.AgentImage{
			Client: client, Configured: opts.Source.HelperImage, Namespace: opts.Destination.Namespace}).Image},
		NodeState:  nodeState,
		PodRecords: podrecord.Gatherer{Client: client, SpoolDir: opts.SpoolDir},
	}
	m.AgentInfo.WithLabelValues(opts.NodeName, version).Set(1)
	// The source pods: informers built here and passed in (sample-controller's pattern),
	// started once the controller's handlers are registered.
	srcFactories := watch.PodInformers(client, opts.Namespaces, opts.NodeName)
	var srcPods []coreinformers.PodInformer
	for _, f := range srcFactories {
		srcPods = append(srcPods, f.Core().V1().Pods())
	}
	ctrl, err := watch.New(handler, srcPods, watch.Options{
		Workers: opts.Concurrency, Grace: opts.ShutdownGrace,
		// Follow loops end after their current tick and collections finish, within the grace.
		Drain: func() { handler.StopFollowing(); work.Wait() },
	})
	if err != nil {
		return err
	}
	work.Done = ctrl.Ended
	for _, f := range srcFactories {
		f.Start(ctx.Done())
		defer f.Shutdown()
	}
	log.Info("starting", "version", version, "node", opts.NodeName, "namespaces", opts.Namespaces,
		"destination", opts.Destination, "transport", transport, "concurrency", opts.Concurrency)

	srv := &http.Server{Addr: opts.Listen, Handler: mux(m, ctrl.Ready, opts.Debug.Pprof), ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", opts.Listen, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ctrl.Run(gctx) })
	serve(g, gctx, srv, ln, "", "", 5*time.Second)
	sweeper := sweep.Sweeper{Exec: remote, Targets: chooser.All, Dir: opts.Destination.Dir,
		After: opts.Destination.StaleAfter, Removed: m.StalePartialsRemoved,
		Retention: opts.Destination.Retention, RetentionRemoved: m.RetentionRemoved}
	if bucket != nil {
		// An upload older than an attempt's deadline (plus the stale margin) has no live owner.
		sweeper.Uploads, sweeper.UploadsAborted = bucket, m.UploadsAborted
		sweeper.UploadAge = func() time.Duration { return current.Load().limits.AttemptDeadline() + opts.Destination.StaleAfter }
	}
	sweeper.Runs = m.JanitorRuns
	requestID := func(pod *corev1.Pod) string {
		if req, err := request.Parse(pod, current.Load().policy); err == nil {
			return req.ID()
		}
		return request.RawID(pod)
	}
	// The janitor (sweep, retention, the requests of lost nodes) is cluster-wide: one agent
	// at a time runs it.
	chore := lease.Chore{Client: client, Namespace: agentNamespace(opts), Name: "podcopy-janitor", Identity: identity(node), Holder: m.JanitorLeader}
	g.Go(func() error {
		return chore.Run(gctx, func(ctx context.Context) error {
			jg, jctx := errgroup.WithContext(ctx)
			jg.Go(func() error { return sweeper.Run(jctx) })
			if nodes != nil && opts.NodeLostAfter > 0 { // without the right to read Nodes, off
				all, stopAll := nodeLister(jctx, log, client, "")
				defer stopAll()
				marker := nodeloss.Marker{Client: client, Nodes: all, Namespaces: opts.Namespaces, Recorder: recorder,
					After: opts.NodeLostAfter, Marked: m.NodeLost, ID: requestID}
				jg.Go(func() error { return marker.Run(jctx) })
			}
			return jg.Wait()
		})
	})
	if bucket != nil && opts.Destination.S3.CreateBucket {
		g.Go(func() error {
			ensureBucket(gctx, log, bucket)
			return nil
		})
	}
	if key.HasCertificate() {
		m.Registry.MustRegister(m.CertificateExpiry)
		g.Go(func() error {
			keepCertificate(gctx, log, key, m.CertificateExpiry)
			return nil
		})
	} else if opts.Signing.PublicKeys != "" {
		m.Registry.MustRegister(m.KeyPublished)
		g.Go(func() error {
			publishKey(gctx, log, client, agentNamespace(opts), opts.Signing.PublicKeys, key.Public(), m.KeyPublished)
			return nil
		})
	}
	if opts.Shell.Enabled {
		con := &console.Console{
			Clients:          shell.UserClients(restConfig, transport),
			Keys:             consoleKeys(client, agentNamespace(opts), opts.Signing.PublicKeys, opts.Signing.Revocations, key),
			Destination:      opts.Destination,
			Metrics:          console.NewMetrics(m.Registry),
			MaxManifestBytes: int(current.Load().limits.MaxManifestBytes),
			SpoolDir:         opts.SpoolDir,
			Log:              log.WithName("console"),
		}
		sh := &shell.Server{
			Config:        opts.Shell.Config,
			Authn:         shell.TokenReviewAuthenticator{Client: client},
			Authz:         shell.SubjectAccessReviewAuthorizer{Client: client},
			Executors:     shell.UserExecutors(restConfig, transport),
			DefaultTarget: func(ctx context.Context) (exec.Target, error) { return chooser.Choose(ctx, "") },
			Metrics:       shell.NewMetrics(m.Registry),
			Log:           log.WithName("shell"),
			Mount:         con.Register,
		}
		con.Authenticate, con.OriginAllowed = sh.Authenticate, sh.OriginAllowed
		log.Info("web shell enabled", "listen", opts.Shell.Listen)
		g.Go(func() error { return sh.ListenAndServe(gctx) })
	}
	if opts.ConfigFile != "" {
		if _, err := os.Stat(opts.ConfigFile); err == nil {
			g.Go(func() error {
				return loader.Reload(gctx, opts.ConfigFile, func(o config.Options) {
					current.Store(reloadable(o))
					m.Config.Loaded(o.ConfigSHA256, true)
					log.Info("policy reloaded", "file", o.ConfigFile, "sha256", o.ConfigSHA256, "allowPaths", o.Policy.AllowPaths, "denyPaths", o.Policy.DenyPaths,
						"maxBytes", o.Policy.MaxBytes, "maxFiles", o.Policy.MaxFiles)
				}, func(error) { m.Config.Refused() })
			})
		}
	}
	err = g.Wait()
	log.Info("stopped")
	return err
}

// reloadable extracts the settings a config reload may change, from options that passed
// Validate (so their policy and limits parse).
func reloadable(o config.Options) *settings {
	p, _ := o.PolicyValue()
	l, _ := o.LimitsValue()
	return &settings{policy: p, limits: l}
}

// serve runs srv on ln in g (TLS with certFile and keyFile when set) until ctx is done, then
// shuts it down within grace (the agent's metrics and the alert receiver share it).
func serve(g *errgroup.Group, ctx context.Context, srv *http.Server, ln net.Listener, certFile, keyFile string, grace time.Duration) {
	g.Go(func() error {
		var err error
		if certFile != "" {
			err = srv.ServeTLS(ln, certFile, keyFile)
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving %s: %w", ln.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}

func mux(m *metrics.Metrics, ready func() bool, pprofOn bool) http.Handler {
	mux := http.NewServeMux()
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	c, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("not running in a cluster and no --kubeconfig given: %w", err)
	}
	return c, nil
}

func newLogger(opts config.Options) (logr.Logger, error) {
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(opts.Log.Level)); err != nil {
		return logr.Discard(), err
	}
	zc := zap.NewProductionConfig()
	if opts.Log.Format == "console" {
		zc = zap.NewDevelopmentConfig()
	}
	zc.Level = zap.NewAtomicLevelAt(level)
	zl, err := zc.Build()
	if err != nil {
		return logr.Discard(), err
	}
	return zapr.NewLogger(zl), nil
}

// signingKey is the custody key: signing.keyFile; else signing.secret's, creating it when
// absent; else (no secret configured, or no right to read it) a key made now for this run.
func signingKey(ctx context.Context, log logr.Logger, client kubernetes.Interface, opts config.Options) (*custody.PrivateKey, error) {
	if opts.Signing.Signer.URL != "" {
		return certifiedKey(log, client, opts)
	}
	if opts.Signing.KeyFile != "" {
		key, err := custody.LoadPrivateKey(opts.Signing.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("signing.keyFile: %w", err)
		}
		log.Info("custody records are signed", "keyID", key.Public().ID(), "keyFile", opts.Signing.KeyFile)
		return key, nil
	}
	why := "no signing.secret"
	if opts.Signing.Secret != "" {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		key, created, err := custody.FromSecret(sctx, client, agentNamespace(opts), opts.Signing.Secret)
		cancel()
		if err == nil {
			log.Info("custody records are signed", "keyID", key.Public().ID(), "secret", agentNamespace(opts)+"/"+opts.Signing.Secret, "created", created)
			return key, nil
		}
		if !apierrors.IsForbidden(err) && !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("signing.secret %s/%s: %w", agentNamespace(opts), opts.Signing.Secret, err)
		}
		why = err.Error()
	}
	key, _, err := custody.GenerateKey()
	if err != nil {
		return nil, err
	}
	log.Info("custody records are signed with a key made for this run only (it is published, but lost when the agent restarts)", "keyID", key.Public().ID(), "why", why)
	return key, nil
}

// certifiedKey is a key made in memory now, certified by the signer (signing.signer): no key
// is read or written, and the public key is not published (each record carries its
// certificate).
func certifiedKey(log logr.Logger, client kubernetes.Interface, opts config.Options) (*custody.PrivateKey, error) {
	key, err := custody.GenerateEphemeralKey()
	if err != nil {
		return nil, err
	}
	sc := opts.Signing.Signer
	roots := func(ctx context.Context) (*x509.CertPool, error) {
		pool := x509.NewCertPool()
		if sc.CAFile != "" {
			data, err := os.ReadFile(sc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("signing.signer.caFile: %w", err)
			}
			if !pool.AppendCertsFromPEM(data) {
				return nil, fmt.Errorf("signing.signer.caFile %s holds no PEM certificate", sc.CAFile)
			}
			return pool, nil
		}
		t, err := custody.PublishedTrust(ctx, client, agentNamespace(opts), opts.Signing.PublicKeys, "")
		if err != nil || len(t.Roots) == 0 {
			return nil, fmt.Errorf("the signer's root is not published in %s/%s yet (is the signer running?): %v", agentNamespace(opts), opts.Signing.PublicKeys, err)
		}
		for _, r := range t.Roots {
			pool.AddCert(r)
		}
		return pool, nil
	}
	c := &signer.Client{URL: sc.URL, TLSRoots: roots, TokenFile: sc.TokenFile, Node: opts.NodeName, Key: key}
	log.Info("custody records are signed with a key made in memory, certified by the signer for this node", "keyID", key.Public().ID(), "signer", sc.URL, "node", opts.NodeName)
	return key.Certified(c), nil
}

// certificateCheck is how often the agent renews its certificate ahead of the records
// that need it.
const certificateCheck = time.Minute

// keepCertificate gets the agent's certificate and renews it (at half its life) ahead of
// the records, until the agent stops; expiry says when the one held expires. A failure is
// logged when it starts and when it ends, not every minute.
func keepCertificate(ctx context.Context, log logr.Logger, key *custody.PrivateKey, expiry prometheus.Gauge) {
	var serial string
	failing := false
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		der, err := key.Ready(cctx)
		if err != nil {
			if !failing {
				log.Error(err, "no certificate from the signer; collections fail (reason Unsigned) once the one held expires; retrying every minute")
			}
			failing = true
			return
		}
		failing = false
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return
		}
		if s := fmt.Sprintf("%x", cert.SerialNumber); s != serial {
			serial = s
			log.Info("certificate issued", "serial", s, "notAfter", cert.NotAfter.UTC().Format(time.RFC3339))
		}
		expiry.Set(float64(cert.NotAfter.Unix()))
	}, certificateCheck)
}

// ensureBucket creates the bucket (destination.s3.createBucket), retrying until it exists or
// the agent stops: the store may start after the agent. Collections before that fail and
// are retried.
func ensureBucket(ctx context.Context, log logr.Logger, s *objstore.Store) {
	_ = wait.PollUntilContextCancel(ctx, 5*time.Second, true, func(ctx context.Context) (bool, error) {
		bctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := s.EnsureBucket(bctx); err != nil {
			log.Error(err, "creating the bucket; retrying", "bucket", s.Bucket)
			return false, nil
		}
		log.Info("bucket ready", "bucket", s.Bucket, "objectLock", s.Lock)
		return true, nil
	})
}

// consoleKeys are what the console verifies custody records with: what is published (every
// agent's keys, the signer's roots, read with the agent's identity: they are public; and the
// revocations) and this agent's own.
func consoleKeys(client kubernetes.Interface, namespace, name, revocations string, own *custody.PrivateKey) func(ctx context.Context) (custody.Trust, bool, error) {
	return func(ctx context.Context) (custody.Trust, bool, error) {
		t := own.Trust()
		if name == "" {
			return t, true, nil
		}
		published, err := custody.PublishedTrust(ctx, client, namespace, name, revocations)
		if err != nil && !apierrors.IsNotFound(err) {
			return t, true, fmt.Errorf("reading the published custody keys %s/%s: %w", namespace, name, err)
		}
		return t.Merge(published), true, nil
	}
}

// publishKey adds the agent's public key to the published ConfigMap, retrying until it
// lands or the agent stops; without the right to (Forbidden) it says so once and gives up.
func publishKey(ctx context.Context, log logr.Logger, client kubernetes.Interface, namespace, name string, pub *custody.PublicKey, published prometheus.Gauge) {
	_ = wait.PollUntilContextCancel(ctx, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := custody.Publish(pctx, client, namespace, name, pub)
		switch {
		case err == nil:
			log.Info("custody public key published", "configMap", namespace+"/"+name, "keyID", pub.ID())
			published.Set(1)
			return true, nil
		case apierrors.IsForbidden(err):
			log.Error(err, "cannot publish the custody public key; give its PEM to verifiers yourself", "configMap", namespace+"/"+name, "keyID", pub.ID())
			return true, nil
		}
		log.Error(err, "publishing the custody public key; retrying", "configMap", namespace+"/"+name)
		return false, nil
	})
}

// agentNamespace is where the janitor's Lease lives: the agent's own namespace (downward
// API), else the destination's (an agent run on a host).
func agentNamespace(opts config.Options) string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return opts.Destination.Namespace
}

// nodeLister starts an informer over Node name (every Node when name is ""), transformed to
// its Ready condition, and returns its lister and its stop, or a nil lister when the agent
// may not list Nodes (an older RBAC): then the node-loss outcome is off and failures are not
// checked against the node.
func nodeLister(ctx context.Context, log logr.Logger, client kubernetes.Interface, name string) (corelisters.NodeLister, func()) {
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := client.CoreV1().Nodes().List(pctx, metav1.ListOptions{Limit: 1})
	cancel()
	if err != nil {
		log.Info("cannot list Nodes; collections on unreachable or lost nodes end by retry only", "error", err.Error())
		return nil, func() {}
	}
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(watch.NodeTransform),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			if name != "" {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
			}
		}))
	lister := f.Core().V1().Nodes().Lister()
	f.Start(ctx.Done()) // a lister not yet synced answers "not found": Ready
	return lister, f.Shutdown
}

// identity names this agent process in the Lease: its node, host and process, and a random
// part. In a container the pid is always 1 and, on the host network, the hostname is the
// node's: without the random part a restarted agent would take its predecessor's identity
// and so its Lease at once, before the Lease expired for the other agents.
func identity(node string) string {
	host, _ := os.Hostname()
	if node == "" {
		node = host
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%s-%d-%s", node, host, os.Getpid(), hex.EncodeToString(b[:]))
}
