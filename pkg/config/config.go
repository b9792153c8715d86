// Package config holds the agent's options (SPEC §5): defaults, a YAML file, PODCOPY_*
// environment variables and flags, in rising order of precedence, and a Validate that runs
// before anything starts.
package config

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/destination"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
	"github.com/podcopy/podcopy/pkg/shell"
	"github.com/podcopy/podcopy/pkg/ship"
)

// DefaultPath is where the agent reads its file.
const DefaultPath = "/etc/podcopy/config.yaml"

// Policy is the policy section, hot-reloaded from the file.
type Policy struct {
	AllowPaths []string `mapstructure:"allowPaths"`
	DenyPaths  []string `mapstructure:"denyPaths"`
	MaxBytes   string   `mapstructure:"maxBytes"`
	MaxFiles   int      `mapstructure:"maxFiles"`
	// Deadline bounds one attempt of a collection (0: 2m + maxBytes at 2 MiB/s).
	Deadline time.Duration `mapstructure:"deadline"`
	// MaxManifestBytes bounds a collection's manifest (a quantity, default 8Mi).
	MaxManifestBytes string `mapstructure:"maxManifestBytes"`
	// MaxFollowBytes caps one followed pod's harvested files in all (a quantity, default
	// 10Gi; "0": no cap).
	MaxFollowBytes string `mapstructure:"maxFollowBytes"`
}

// Modes of the binary.
const (
	ModeAgent   = "agent"
	ModeSidecar = "sidecar"
)

// Options is the whole agent configuration.
type Options struct {
	ConfigFile string `mapstructure:"-"`
	// Mode is agent (watch annotated pods) or sidecar (the podcopy sidecar: a container
	// that holds the podcopy binary next to the application, for the agent to read through).
	Mode        string             `mapstructure:"mode"`
	Kubeconfig  string             `mapstructure:"kubeconfig"`
	NodeName    string             `mapstructure:"nodeName"`
	Namespaces  []string           `mapstructure:"namespaces"`
	Destination destination.Config `mapstructure:"destination"`
	Policy      Policy             `mapstructure:"policy"`
	Concurrency int                `mapstructure:"concurrency"`
	Compression string             `mapstructure:"compression"`
	Exec        struct {
		Transport string `mapstructure:"transport"`
		// StallTimeout fails a collection that moves no byte for this long.
		StallTimeout time.Duration `mapstructure:"stallTimeout"`
	} `mapstructure:"exec"`
	Retry struct {
		// Attempts bounds how often a once collection runs after transient failures.
		Attempts int `mapstructure:"attempts"`
	} `mapstructure:"retry"`
	// Source is SPEC §5 source.mode and source.helperImage.
	Source struct {
		Mode        string `mapstructure:"mode"`
		HelperImage string `mapstructure:"helperImage"`
	} `mapstructure:"source"`
	Listen string `mapstructure:"listen"`
	// NodeLostAfter: a pod's unfinished request is marked Failed (reason NodeLost) by the
	// janitor's Lease holder once the pod's node has not been Ready for this long (0: never).
	NodeLostAfter time.Duration `mapstructure:"nodeLostAfter"`
	Log           struct {
		Format string `mapstructure:"format"`
		Level  string `mapstructure:"level"`
	} `mapstructure:"log"`
	ShutdownGrace time.Duration `mapstructure:"shutdownGrace"`
	// KubeQPS limits the agent's API requests per second (burst twice that).
	KubeQPS  float32 `mapstructure:"kubeQPS"`
	SpoolDir string  `mapstructure:"spoolDir"`
	// SpoolMaxBytes bounds what all manifests in flight spool together (a quantity, below
	// the spool volume's size so it can never get the agent evicted; "0": no bound).
	SpoolMaxBytes string `mapstructure:"spoolMaxBytes"`
	Shell         struct {
		Enabled      bool `mapstructure:"enabled"`
		shell.Config `mapstructure:",squash"`
	} `mapstructure:"shell"`
	// Signing is the custody record's key (SPEC §9).
	Signing struct {
		// KeyFile is the agent's private key as a file (PEM: PKCS#8 ed25519 or ECDSA P-256,
		// or SEC 1 EC); when set, Secret is not read.
		KeyFile string `mapstructure:"keyFile"`
		// Secret is the Secret in the agent's namespace whose key.pem signs; the first agent
		// creates it with a new ed25519 key. "" (or unreadable): a key made for this run.
		Secret string `mapstructure:"secret"`
		// PublicKeys is the ConfigMap, in the agent's namespace, where the agent publishes
		// its public key (one "<key id>.pem" entry per key; entries are added, never
		// removed, so collections signed before a rotation still verify). "": not published.
		PublicKeys string `mapstructure:"publicKeys"`
	} `mapstructure:"signing"`
	Debug struct {
		// Pprof serves net/http/pprof on the metrics listener.
		Pprof bool `mapstructure:"pprof"`
	} `mapstructure:"debug"`
}

// defaults are SPEC §5's; nodeName defaults to $NODE_NAME.
func defaults(v *viper.Viper) {
	p := policy.Default()
	v.SetDefault("mode", ModeAgent)
	v.SetDefault("destination.pod", "")
	v.SetDefault("kubeconfig", "")
	v.SetDefault("nodeName", os.Getenv("NODE_NAME"))
	v.SetDefault("namespaces", []string{})
	v.SetDefault("destination.namespace", "podcopy")
	v.SetDefault("destination.selector", "app.kubernetes.io/component=analysis")
	v.SetDefault("destination.container", "")
	v.SetDefault("destination.dir", "/collect")
	v.SetDefault("policy.allowPaths", p.AllowPaths)
	v.SetDefault("policy.denyPaths", p.DenyPaths)
	v.SetDefault("policy.maxBytes", "1Gi")
	v.SetDefault("policy.maxFiles", 10000)
	v.SetDefault("policy.deadline", time.Duration(0))
	v.SetDefault("policy.maxManifestBytes", "8Mi")
	v.SetDefault("policy.maxFollowBytes", "10Gi")
	v.SetDefault("concurrency", 4)
	v.SetDefault("compression", "none")
	v.SetDefault("exec.transport", string(exec.TransportAuto))
	v.SetDefault("exec.stallTimeout", 60*time.Second)
	v.SetDefault("retry.attempts", 3)
	v.SetDefault("nodeLostAfter", 2*time.Minute)
	v.SetDefault("destination.staleAfter", time.Hour)
	v.SetDefault("destination.quota.bytes", "")
	v.SetDefault("destination.quota.collections", 0)
	v.SetDefault("destination.retention.keepLast", 0)
	v.SetDefault("destination.retention.maxAge", time.Duration(0))
	v.SetDefault("destination.mode", "")
	v.SetDefault("destination.namespaceModes", map[string]string{})
	v.SetDefault("destination.s3.endpoint", "")
	v.SetDefault("destination.s3.bucket", "")
	v.SetDefault("destination.s3.region", "")
	v.SetDefault("destination.s3.caFile", "")
	v.SetDefault("destination.s3.partSize", "8Mi")
	v.SetDefault("destination.s3.objectLock.mode", "")
	v.SetDefault("destination.s3.objectLock.days", 0)
	v.SetDefault("destination.s3.objectLock.legalHold", false)
	v.SetDefault("destination.s3.createBucket", false)
	v.SetDefault("source.mode", "auto")
	v.SetDefault("source.helperImage", "")
	v.SetDefault("listen", ":9090")
	v.SetDefault("log.format", "json")
	v.SetDefault("log.level", "info")
	v.SetDefault("shutdownGrace", 25*time.Second)
	v.SetDefault("spoolDir", "")
	v.SetDefault("spoolMaxBytes", "48Mi")
	v.SetDefault("kubeQPS", 50)
	v.SetDefault("shell.enabled", false)
	v.SetDefault("shell.listen", "127.0.0.1:8080")
	v.SetDefault("shell.tlsCertFile", "")
	v.SetDefault("shell.tlsKeyFile", "")
	v.SetDefault("shell.allowPlainHTTP", false)
	v.SetDefault("shell.allowedOrigins", []string{})
	v.SetDefault("shell.maxSessions", 20)
	v.SetDefault("shell.maxSessionsPerUser", 3)
	v.SetDefault("shell.idleTimeout", 30*time.Minute)
	v.SetDefault("debug.pprof", false)
	v.SetDefault("signing.keyFile", "")
	v.SetDefault("signing.secret", DefaultSigningSecret)
	v.SetDefault("signing.publicKeys", DefaultPublicKeys)
}

// The signing key's Secret and the ConfigMap of the published custody keys.
const (
	DefaultSigningSecret = "podcopy-signing-key"
	DefaultPublicKeys    = "podcopy-signing-keys"
)

// Loader reads Options; keep it to reload the policy later.
type Loader struct {
	v     *viper.Viper
	flags *pflag.FlagSet
}

// NewLoader binds flags on fs (call fs.Parse afterwards, then Load).
func NewLoader(fs *pflag.FlagSet) *Loader {
	v := viper.New()
	defaults(v)
	v.SetEnvPrefix("PODCOPY")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	fs.String("config", DefaultPath, "configuration file (YAML); a missing default file is not an error")
	fs.String("kubeconfig", "", "kubeconfig for running outside a cluster (default: in-cluster ServiceAccount)")
	fs.String("node-name", "", "only pods on this node (default $NODE_NAME; empty: all pods)")
	fs.String("listen", "", "address for /metrics, /healthz and /readyz (default :9090)")
	fs.String("log-format", "", "json or console (default json)")
	fs.String("log-level", "", "debug, info, warn or error (default info)")
	fs.Int("concurrency", 0, "collections in flight at once (default 4)")
	fs.String("mode", "", "agent (watch annotated pods; default) or sidecar (the podcopy sidecar, which the agent reads through: see README)")
	fs.String("destination-pod", "", "the one analysis pod to write to (read with get only; default: choose by destination.selector)")
	for flag, key := range map[string]string{"kubeconfig": "kubeconfig", "node-name": "nodeName", "listen": "listen",
		"log-format": "log.format", "log-level": "log.level", "concurrency": "concurrency", "mode": "mode",
		"destination-pod": "destination.pod"} {
		_ = v.BindPFlag(key, fs.Lookup(flag))
	}
	return &Loader{v: v, flags: fs}
}

// Load reads the file (if any) and returns validated Options.
func (l *Loader) Load() (Options, error) {
	var o Options
	file, _ := l.flags.GetString("config")
	o.ConfigFile = file
	if err := l.read(file); err != nil {
		return o, err
	}
	if err := l.v.Unmarshal(&o); err != nil {
		return o, fmt.Errorf("config: %w", err)
	}
	o.ConfigFile = file
	return o, o.Validate()
}

func (l *Loader) read(file string) error {
	if file == "" {
		return nil
	}
	l.v.SetConfigFile(file)
	l.v.SetConfigType("yaml")
	if err := l.v.ReadInConfig(); err != nil {
		if errors.Is(err, os.ErrNotExist) && file == DefaultPath {
			return nil
		}
		return fmt.Errorf("reading %s: %w", file, err)
	}
	return nil
}

// Validate checks every option before anything starts.
func (o Options) Validate() error {
	var errs []error
	if err := o.Destination.Validate(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.PolicyValue(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.LimitsValue(); err != nil {
		errs = append(errs, err)
	}
	if o.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("concurrency must be at least 1, got %d", o.Concurrency))
	}
	if _, err := o.SpoolBudget(); err != nil {
		errs = append(errs, err)
	}
	if o.Signing.KeyFile != "" {
		if _, err := custody.LoadPrivateKey(o.Signing.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("signing.keyFile: %w", err))
		}
	}
	if o.Compression != "none" && o.Compression != "gzip" && o.Compression != "auto" {
		errs = append(errs, fmt.Errorf("compression %q is unknown; use none, gzip or auto", o.Compression))
	}
	if _, err := exec.ParseTransport(o.Exec.Transport); err != nil {
		errs = append(errs, err)
	}
	switch o.Source.Mode {
	case "auto", "tar", "helper":
	default:
		errs = append(errs, fmt.Errorf("source.mode %q is unknown; use auto, tar or helper", o.Source.Mode))
	}
	if o.Log.Format != "json" && o.Log.Format != "console" {
		errs = append(errs, fmt.Errorf("log.format %q is unknown; use json or console", o.Log.Format))
	}
	switch o.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level %q is unknown; use debug, info, warn or error", o.Log.Level))
	}
	if o.Shell.Enabled && (o.Shell.MaxSessions < 1 || o.Shell.MaxSessionsPerUser < 1 || o.Shell.IdleTimeout <= 0 || o.Shell.Listen == "") {
		errs = append(errs, errors.New("shell: listen, maxSessions, maxSessionsPerUser and idleTimeout must be set and positive"))
	}
	if o.Shell.Enabled {
		if err := o.Shell.CheckTransport(); err != nil {
			errs = append(errs, err)
		}
	}
	if o.KubeQPS <= 0 {
		errs = append(errs, fmt.Errorf("kubeQPS must be positive, got %v", o.KubeQPS))
	}
	if o.NodeLostAfter < 0 {
		errs = append(errs, fmt.Errorf("nodeLostAfter must not be negative, got %s", o.NodeLostAfter))
	}
	if o.Retry.Attempts < 1 {
		errs = append(errs, fmt.Errorf("retry.attempts must be at least 1, got %d", o.Retry.Attempts))
	}
	if o.Exec.StallTimeout < time.Second {
		errs = append(errs, fmt.Errorf("exec.stallTimeout must be at least 1s, got %s", o.Exec.StallTimeout))
	}
	if o.ShutdownGrace < 0 {
		errs = append(errs, errors.New("shutdownGrace must not be negative"))
	}
	switch o.Mode {
	case ModeAgent:
	case ModeSidecar:
	default:
		errs = append(errs, fmt.Errorf("mode %q is unknown; use %s or %s", o.Mode, ModeAgent, ModeSidecar))
	}
	return errors.Join(errs...)
}

// PolicyValue returns the path policy.
func (o Options) PolicyValue() (policy.Policy, error) {
	p := policy.Policy{AllowPaths: o.Policy.AllowPaths, DenyPaths: o.Policy.DenyPaths}
	return p, p.Validate()
}

// LimitsValue returns the per-collection limits.
func (o Options) LimitsValue() (ship.Limits, error) {
	q, err := resource.ParseQuantity(o.Policy.MaxBytes)
	if err != nil {
		return ship.Limits{}, fmt.Errorf("policy.maxBytes %q: %w", o.Policy.MaxBytes, err)
	}
	if o.Policy.MaxFiles < 1 || q.Value() < 1 {
		return ship.Limits{}, errors.New("policy.maxBytes and policy.maxFiles must be positive")
	}
	m, err := resource.ParseQuantity(o.Policy.MaxManifestBytes)
	if err != nil {
		return ship.Limits{}, fmt.Errorf("policy.maxManifestBytes %q: %w", o.Policy.MaxManifestBytes, err)
	}
	if m.Value() < 64<<10 {
		return ship.Limits{}, fmt.Errorf("policy.maxManifestBytes %q: at least 64Ki", o.Policy.MaxManifestBytes)
	}
	fb, err := resource.ParseQuantity(o.Policy.MaxFollowBytes)
	if err != nil || fb.Value() < 0 {
		return ship.Limits{}, fmt.Errorf("policy.maxFollowBytes %q: a non-negative quantity (%v)", o.Policy.MaxFollowBytes, err)
	}
	if o.Policy.Deadline < 0 {
		return ship.Limits{}, fmt.Errorf("policy.deadline %s: negative", o.Policy.Deadline)
	}
	return ship.Limits{MaxBytes: q.Value(), MaxFiles: o.Policy.MaxFiles, Deadline: o.Policy.Deadline, MaxManifestBytes: m.Value(), MaxFollowBytes: fb.Value()}, nil
}

// SpoolBudget is spoolMaxBytes as the budget all manifests in flight share (nil: no bound).
func (o Options) SpoolBudget() (*manifest.SpoolBudget, error) {
	if o.SpoolMaxBytes == "" {
		return nil, nil
	}
	q, err := resource.ParseQuantity(o.SpoolMaxBytes)
	if err != nil || q.Value() < 0 {
		return nil, fmt.Errorf("spoolMaxBytes %q: a non-negative quantity (%v)", o.SpoolMaxBytes, err)
	}
	if q.Value() == 0 {
		return nil, nil
	}
	return &manifest.SpoolBudget{Max: q.Value()}, nil
}
