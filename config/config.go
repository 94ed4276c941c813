// Package config is the YAML configuration of `trousseau serve` (and of
// `recover` and `config check`): a typed struct, strict loading that
// rejects unknown fields, and Validate, whose errors name the field at
// fault. Backends are built from it in one place.
package config

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/awskms"
	"github.com/trousseau-io/trousseau/kmsclients/azurekv"
	"github.com/trousseau-io/trousseau/kmsclients/local"
	"github.com/trousseau-io/trousseau/kmsclients/vault"
	"github.com/trousseau-io/trousseau/split"
)

// Defaults for fields left out.
const (
	DefaultSocket        = "/var/run/trousseau/kms.sock"
	DefaultStateDir      = "/var/lib/trousseau"
	DefaultHealthListen  = "127.0.0.1:8787"
	DefaultProbeInterval = 30 * time.Second
	DefaultProbeTimeout  = 5 * time.Second
	DefaultMaxAge        = 720 * time.Hour
	DefaultSocketMode    = "0600"
	MinMaxAge            = time.Hour
)

// Config is the whole file.
type Config struct {
	Socket            string            `json:"socket,omitempty"`
	SocketPermissions SocketPermissions `json:"socketPermissions,omitzero"`
	StateDir          string            `json:"stateDir,omitempty"`
	Threshold         int               `json:"threshold"`
	// MinThreshold is the lowest threshold a stored DEK may have and still
	// be decrypted (default: threshold). Set it to the old k while raising
	// threshold, until every object has been rewritten under the new one.
	MinThreshold int       `json:"minThreshold,omitempty"`
	Backends     []Backend `json:"backends"`
	Health       Health    `json:"health,omitzero"`
	Rotation     Rotation  `json:"rotation,omitzero"`
	Log          Log       `json:"log,omitzero"`
}

// SocketPermissions lets a kube-apiserver running as another user reach the socket.
type SocketPermissions struct {
	Mode  string `json:"mode,omitempty"`  // octal, default "0600"
	Group string `json:"group,omitempty"` // group name or id; empty keeps the process's group
}

// Health is the HTTP endpoint and the background prober.
type Health struct {
	Listen        string   `json:"listen,omitempty"`
	ProbeInterval Duration `json:"probeInterval,omitempty"`
	ProbeTimeout  Duration `json:"probeTimeout,omitempty"`
}

// Rotation is the DEK rotation policy.
type Rotation struct {
	// MaxAge rotates the DEK when it is older; "0s" turns age-based rotation off.
	MaxAge *Duration `json:"maxAge,omitempty"`
}

// Log configures log/slog.
type Log struct {
	Level  string `json:"level,omitempty"`  // debug | info | warn | error
	Format string `json:"format,omitempty"` // json | text
}

// Backend is one entry of backends: a name and exactly one kind.
type Backend struct {
	Name    string          `json:"name"`
	Local   *local.Config   `json:"local,omitempty"`
	AWSKMS  *awskms.Config  `json:"awskms,omitempty"`
	AzureKV *azurekv.Config `json:"azurekv,omitempty"`
	Vault   *vault.Config   `json:"vault,omitempty"`
}

// kindNames lists every backend kind, by its YAML name.
const kindNames = "local, vault, awskms or azurekv"

// kinds lists the kinds set on b, by their YAML names.
func (b Backend) kinds() []string {
	var k []string
	for name, set := range map[string]bool{"local": b.Local != nil, "awskms": b.AWSKMS != nil, "azurekv": b.AzureKV != nil, "vault": b.Vault != nil} {
		if set {
			k = append(k, name)
		}
	}
	sort.Strings(k)
	return k
}

// Duration is a time.Duration written as "30s", "720h".
type Duration struct{ time.Duration }

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("want a duration such as \"30s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes a Go duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(d.String())), nil }

// Load reads, defaults and validates a config file.
func Load(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse is Load without the file.
func Parse(raw []byte) (*Config, error) {
	var c Config
	if err := checkFields(raw); err != nil {
		return nil, cleanYAMLError(err)
	}
	// Strict: unknown fields (a typo) and duplicate keys are errors.
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return nil, cleanYAMLError(err)
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// cleanYAMLError drops the JSON-decoder wording sigs.k8s.io/yaml adds.
func cleanYAMLError(err error) error {
	msg := err.Error()
	for _, p := range []string{"error unmarshaling JSON: while decoding JSON: ", "error converting YAML to JSON: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return errors.New(msg)
}

// SetDefaults fills the fields left out.
func (c *Config) SetDefaults() {
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.SocketPermissions.Mode == "" {
		c.SocketPermissions.Mode = DefaultSocketMode
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Health.Listen == "" {
		c.Health.Listen = DefaultHealthListen
	}
	if c.Health.ProbeInterval.Duration == 0 {
		c.Health.ProbeInterval.Duration = DefaultProbeInterval
	}
	if c.Health.ProbeTimeout.Duration == 0 {
		c.Health.ProbeTimeout.Duration = DefaultProbeTimeout
	}
	if c.Rotation.MaxAge == nil {
		c.Rotation.MaxAge = &Duration{DefaultMaxAge}
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
}

// Validate checks the config; every error names the field at fault.
func (c *Config) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if !strings.HasPrefix(c.Socket, "/") {
		add("socket", "must be an absolute path, got %q", c.Socket)
	}
	if _, err := c.SocketMode(); err != nil {
		add("socketPermissions.mode", "%v", err)
	}
	if !strings.HasPrefix(c.StateDir, "/") {
		add("stateDir", "must be an absolute path, got %q", c.StateDir)
	}
	if len(c.Backends) == 0 {
		add("backends", "at least one backend is required")
	}
	if err := split.ValidateThreshold(c.Threshold, len(c.Backends)); err != nil && len(c.Backends) > 0 {
		add("threshold", "%v", err)
	}
	if c.MinThreshold != 0 && (c.MinThreshold < 1 || c.MinThreshold > c.Threshold) {
		add("minThreshold", "must be 1 to threshold (%d), got %d; leave it out to refuse every DEK below threshold", c.Threshold, c.MinThreshold)
	}
	seen := map[string]int{}
	keyFiles := map[string]int{}
	for i, b := range c.Backends {
		if b.Local != nil && b.Local.KeyFile != "" {
			if j, dup := keyFiles[b.Local.KeyFile]; dup {
				add(fmt.Sprintf("backends[%d].local.keyFile", i), "%s is already the key of backends[%d]: each backend needs a key of its own", b.Local.KeyFile, j)
			}
			keyFiles[b.Local.KeyFile] = i
		}
		field := fmt.Sprintf("backends[%d]", i)
		if err := kmsclients.ValidateName(b.Name); err != nil {
			add(field+".name", "%v", err)
		} else if j, dup := seen[b.Name]; dup {
			add(field+".name", "%q is already the name of backends[%d]", b.Name, j)
		}
		seen[b.Name] = i
		switch kinds := b.kinds(); len(kinds) {
		case 0:
			add(field, "set exactly one backend kind (%s)", kindNames)
		case 1:
			if err := b.validateKind(); err != nil {
				add(field, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
			}
		default:
			add(field, "set exactly one backend kind, got %s", strings.Join(kinds, " and "))
		}
	}
	if d := c.Health.ProbeInterval.Duration; d < time.Second {
		add("health.probeInterval", "must be at least 1s, got %s", d)
	}
	if d := c.Health.ProbeTimeout.Duration; d <= 0 || d > c.Health.ProbeInterval.Duration {
		add("health.probeTimeout", "must be positive and at most health.probeInterval, got %s", d)
	}
	if d := c.MaxAge(); d != 0 && d < MinMaxAge {
		add("rotation.maxAge", "must be 0s (off) or at least %s, got %s: each rotation makes every stored object stale", MinMaxAge, d)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		add("log.format", "want json or text, got %q", c.Log.Format)
	}
	return errors.Join(errs...)
}

func (b Backend) validateKind() error {
	// Each kind's errors name its fields ("awskms.keyID: ...").
	switch {
	case b.Local != nil:
		return b.Local.Validate()
	case b.AWSKMS != nil:
		return b.AWSKMS.Validate()
	case b.AzureKV != nil:
		return b.AzureKV.Validate()
	case b.Vault != nil:
		return b.Vault.Validate()
	}
	return nil
}

// SocketMode parses socketPermissions.mode.
func (c *Config) SocketMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(c.SocketPermissions.Mode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("want an octal mode such as \"0660\", got %q", c.SocketPermissions.Mode)
	}
	if m&0o007 != 0 {
		return 0, fmt.Errorf("mode %s lets any local user talk to the plugin; use at most 0660", c.SocketPermissions.Mode)
	}
	return os.FileMode(m), nil
}

// MaxAge is the rotation age, 0 when off.
func (c *Config) MaxAge() time.Duration {
	if c.Rotation.MaxAge == nil {
		return 0
	}
	return c.Rotation.MaxAge.Duration
}

// BuildBackends constructs every backend. On error, those already built
// are closed.
func (c *Config) BuildBackends(ctx context.Context) ([]kmsclients.Backend, error) {
	out := make([]kmsclients.Backend, 0, len(c.Backends))
	for i, b := range c.Backends {
		built, err := b.build(ctx)
		if err != nil {
			kmsclients.CloseAll(out)
			return nil, fmt.Errorf("backends[%d] (%s): %w", i, b.Name, err)
		}
		out = append(out, built)
	}
	return out, nil
}

func (b Backend) build(ctx context.Context) (kmsclients.Backend, error) {
	switch {
	case b.Local != nil:
		return local.New(b.Name, *b.Local)
	case b.AWSKMS != nil:
		return awskms.New(ctx, b.Name, *b.AWSKMS)
	case b.AzureKV != nil:
		return azurekv.New(ctx, b.Name, *b.AzureKV)
	case b.Vault != nil:
		return vault.New(ctx, b.Name, *b.Vault)
	}
	return nil, errors.New("no backend kind set")
}

// Marshal writes the config as YAML.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

// ThresholdFloor is the lowest threshold a stored DEK may have:
// minThreshold, or threshold when it is not set.
func (c *Config) ThresholdFloor() int {
	if c.MinThreshold > 0 {
		return c.MinThreshold
	}
	return c.Threshold
}
