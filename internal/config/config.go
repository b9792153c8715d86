// Package config holds the agent's options (SPEC §5): defaults, a YAML file, PODCOPY_*
// environment variables and flags, in rising order of precedence, and a Validate that runs
// before anything starts.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/podcopy/podcopy/internal/destination"
	"github.com/podcopy/podcopy/internal/shell"
	"github.com/podcopy/podcopy/pkg/custody"
	"github.com/podcopy/podcopy/pkg/exec"
	"github.com/podcopy/podcopy/pkg/manifest"
	"github.com/podcopy/podcopy/pkg/policy"
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
	// ConfigSHA256 is the SHA-256 of the file's contents as loaded ("" without a file).
	ConfigSHA256 string `mapstructure:"-"`
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
	// SourceSpoolMaxBytes is the disk of the spool directory the source streams of all
	// collections in flight may wait in while their destinations are slower (a quantity;
	// each collection gets this over concurrency). A source held on a full spool is what the
	// runtime's relays cut (issue 35), so it is sized to hold whole archives.
	SourceSpoolMaxBytes string `mapstructure:"sourceSpoolMaxBytes"`
	Shell               struct {
		Enabled      bool `mapstructure:"enabled"`
		shell.Config `mapstructure:",squash"`
	} `mapstructure:"shell"`
	// Signing is the custody record's key (SPEC §9).
	Signing struct {
		// KeyFile is the agent's private key as a file (PEM: PKCS#8 ed25519 or ECDSA P-256,
		// or SEC 1 EC); when set, Secret is not read.
		KeyFile string `mapstructure:"keyFile"`
		// Secret is the Secret in the agent's namespace whose key.pem signs; the first agent
		// creates it with a new ECDSA P-256 key. "" (or unreadable): a key made for this run.
		Secret string `mapstructure:"secret"`
		// PublicKeys is the ConfigMap, in the agent's namespace, where the agent publishes
		// its public key (one "<key id>.pem" entry per key; entries are added, never
		// removed, so collections signed before a rotation still verify). "": not published.
		PublicKeys string `mapstructure:"publicKeys"`
		// Revocations is the ConfigMap, in the agent's namespace, of revoked nodes and
		// certificates (cluster admins write it; the console's verify reads it).
		Revocations string `mapstructure:"revocations"`
		// Signer, when its URL is set, certifies a key the agent makes in memory at start
		// (never written anywhere; Secret and KeyFile are then not used): a short-lived
		// certificate naming the agent's node, and RFC 3161 timestamps on every record.
		Signer struct {
			// URL is the signer's base URL (https://podcopy-signer.NAMESPACE.svc:8443).
			URL string `mapstructure:"url"`
			// CAFile is the PEM CA the signer's TLS certificate chains to; "": the signer's
			// root read from the PublicKeys ConfigMap (through the API server's TLS).
			CAFile string `mapstructure:"caFile"`
			// TokenFile is the agent pod's projected ServiceAccount token for the signer's
			// audience.
			TokenFile string `mapstructure:"tokenFile"`
		} `mapstructure:"signer"`
	} `mapstructure:"signing"`
	Debug struct {
		// Pprof serves net/http/pprof on the metrics listener.
		Pprof bool `mapstructure:"pprof"`
	} `mapstructure:"debug"`
}

// Defaults are SPEC §5's defaults, typed, in one place (the golden file
// testdata/defaults.golden.json shows them as loaded); nodeName defaults to $NODE_NAME.
func Defaults() Options {
	p := policy.Default()
	o := Options{
		Mode:        ModeAgent,
		NodeName:    os.Getenv("NODE_NAME"),
		Namespaces:  []string{},
		Destination: destination.Defaults(),
		Policy: Policy{AllowPaths: p.AllowPaths, DenyPaths: p.DenyPaths, MaxBytes: "1Gi", MaxFiles: 10000,
			MaxManifestBytes: "8Mi", MaxFollowBytes: "10Gi"},
		Concurrency:   4,
		Compression:   "none",
		Listen:        ":9090",
		NodeLostAfter: 2 * time.Minute,
		ShutdownGrace: 25 * time.Second,
		KubeQPS:       50,
		SpoolMaxBytes: "48Mi",
		// Whole 100,000-file archives (150 MB) at the default concurrency.
		SourceSpoolMaxBytes: "1Gi",
	}
	o.Exec.Transport, o.Exec.StallTimeout = string(exec.TransportAuto), 60*time.Second
	o.Retry.Attempts = 3
	o.Source.Mode = "auto"
	o.Log.Format, o.Log.Level = "json", "info"
	o.Shell.Listen, o.Shell.AllowedOrigins = "127.0.0.1:8080", []string{}
	o.Shell.MaxSessions, o.Shell.MaxSessionsPerUser, o.Shell.IdleTimeout = 20, 3, 30*time.Minute
	o.Signing.Secret, o.Signing.PublicKeys, o.Signing.Revocations = DefaultSigningSecret, DefaultPublicKeys, DefaultRevocations
	o.Signing.Signer.TokenFile = DefaultSignerTokenFile
	return o
}

// defaults sets every key of Defaults() as viper's default (one key per leaf, named by the
// mapstructure tags), so the file, the environment and flags override each one.
func defaults(v *viper.Viper) {
	leaves := map[string]any{}
	flatten("", reflect.ValueOf(Defaults()), leaves)
	for k, val := range leaves {
		v.SetDefault(k, val)
	}
}

// flatten adds the leaves of struct value rv to out, keyed by their dotted mapstructure
// names (squashed structs add their fields at the same level).
func flatten(prefix string, rv reflect.Value, out map[string]any) {
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		switch {
		case name == "-":
			continue
		case opts == "squash":
			flatten(prefix, rv.Field(i), out)
			continue
		case name == "":
			name = f.Name // mapstructure matches field names without regard to case
		}
		if fv := rv.Field(i); fv.Kind() == reflect.Struct {
			flatten(prefix+name+".", fv, out)
		} else {
			out[prefix+name] = fv.Interface()
		}
	}
}

// The signing key's Secret and the ConfigMap of the published custody keys.
const (
	DefaultSigningSecret = "podcopy-signing-key"
	DefaultPublicKeys    = "podcopy-signing-keys"
	DefaultRevocations   = "podcopy-revocations"
	// DefaultSignerTokenFile is where the chart mounts the agent's projected token for the
	// signer.
	DefaultSignerTokenFile = "/var/run/secrets/podcopy/signer/token"
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
	if data, err := os.ReadFile(file); err == nil {
		sum := sha256.Sum256(data)
		o.ConfigSHA256 = hex.EncodeToString(sum[:])
	}
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
	if _, err := o.SourceSpoolShare(); err != nil {
		errs = append(errs, err)
	}
	if _, err := o.SpoolBudget(); err != nil {
		errs = append(errs, err)
	}
	if o.Signing.KeyFile != "" {
		if _, err := custody.LoadPrivateKey(o.Signing.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("signing.keyFile: %w", err))
		}
	}
	if u := o.Signing.Signer.URL; u != "" && !strings.HasPrefix(u, "https://") {
		errs = append(errs, fmt.Errorf("signing.signer.url %q: use https://", u))
	}
	if o.Signing.Signer.URL != "" && o.Signing.Signer.CAFile == "" && o.Signing.PublicKeys == "" {
		errs = append(errs, errors.New("signing.signer.url needs signing.signer.caFile or signing.publicKeys (where the signer's root is read)"))
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

// SourceSpoolShare is one collection's share of sourceSpoolMaxBytes: over concurrency.
func (o Options) SourceSpoolShare() (int64, error) {
	q, err := resource.ParseQuantity(o.SourceSpoolMaxBytes)
	if err != nil || q.Value() < 1<<20 {
		return 0, fmt.Errorf("sourceSpoolMaxBytes %q: a quantity of at least 1Mi (%v)", o.SourceSpoolMaxBytes, err)
	}
	return q.Value() / int64(max(o.Concurrency, 1)), nil
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
