// Package config is the YAML configuration of `trousseau serve`,
// `recover` and `config check`: strict loading, and [Config.Validate],
// whose errors name the field at fault.
package config

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/trousseau-io/trousseau/kmsclients"
	"github.com/trousseau-io/trousseau/kmsclients/local"
	"github.com/trousseau-io/trousseau/split"
)

// Defaults for fields left out.
const (
	DefaultSocket        = "/var/run/trousseau/kms.sock"
	DefaultStateDir      = "/var/lib/trousseau"
	DefaultHealthListen  = "127.0.0.1:8787"
	DefaultProbeInterval = kmsclients.DefaultProbeInterval
	DefaultProbeTimeout  = kmsclients.DefaultProbeTimeout
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
	// MinThreshold is the lowest threshold a stored DEK may have (default
	// threshold): the old k while raising it, until every object is rewritten.
	MinThreshold int       `json:"minThreshold,omitempty"`
	Backends     []Backend `json:"backends"`
	Health       Health    `json:"health,omitzero"`
	Rotation     Rotation  `json:"rotation,omitzero"`
	Log          Log       `json:"log,omitzero"`
	Recovery     *Recovery `json:"recovery,omitempty"`
}

// SocketPermissions lets a kube-apiserver of another user reach the socket.
type SocketPermissions struct {
	Mode  string `json:"mode,omitempty"`  // octal, default "0600"
	Group string `json:"group,omitempty"` // name or id; "" keeps the process's
}

// Health is the HTTP endpoint and the background prober.
type Health struct {
	Listen        string   `json:"listen,omitempty"`
	ProbeInterval Duration `json:"probeInterval,omitempty"`
	ProbeTimeout  Duration `json:"probeTimeout,omitempty"`
}

// Rotation is the DEK rotation policy.
type Rotation struct {
	// MaxAge rotates an older DEK; "0s" is off.
	MaxAge *Duration `json:"maxAge,omitempty"`
}

// Log configures log/slog.
type Log struct {
	Level  string `json:"level,omitempty"`  // debug | info | warn | error
	Format string `json:"format,omitempty"` // json | text
}

// Duration is written "30s", "720h": [kmsclients.Duration], as in the
// backends' blocks, so the strict field walk checks all alike.
type Duration = kmsclients.Duration

// Load reads, defaults and validates a config file. Overrides apply
// before Validate, so a flag (serve's --socket) is what is validated: a
// kmsplugin endpoint is checked against the socket serve will use.
func Load(path string, overrides ...func(*Config)) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(raw, overrides...)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse is Load without the file.
func Parse(raw []byte, overrides ...func(*Config)) (*Config, error) {
	var c Config
	if err := checkFields(raw); err != nil {
		return nil, cleanYAMLError(err)
	}
	// Strict: unknown fields and duplicate keys are errors.
	if err := yaml.UnmarshalStrict(raw, &c); err != nil {
		return nil, cleanYAMLError(err)
	}
	c.SetDefaults()
	for _, override := range overrides {
		override(&c)
	}
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
		c.Health.ProbeTimeout.Duration = kmsclients.ProbeTimeoutFor(c.Health.ProbeInterval.Duration)
	}
	if c.Rotation.MaxAge == nil {
		c.Rotation.MaxAge = &Duration{Duration: DefaultMaxAge}
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "json"
	}
}

// MaxSocketPath is Linux's sun_path (108 bytes) less its NUL.
const MaxSocketPath = 107

// problems collects Validate's errors, each prefixed by its field.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

// Validate checks all that serve would refuse or be stuck on, except what
// depends on the machine ([Config.ValidateOnHost]); errors name the field.
func (c *Config) Validate() error {
	var p problems
	c.validateSocket(&p)
	if !strings.HasPrefix(c.StateDir, "/") {
		p.add("stateDir", "must be an absolute path, got %q", c.StateDir)
	}
	c.validateThreshold(&p)
	c.validateBackends(&p)
	c.validateHealth(&p)
	c.validateRecovery(&p)
	if d := c.MaxAge(); d != 0 && d < MinMaxAge {
		p.add("rotation.maxAge", "must be 0s (off) or at least %s, got %s: each rotation makes every stored object stale", MinMaxAge, d)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.add("log.level", "want debug, info, warn or error, got %q", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		p.add("log.format", "want json or text, got %q", c.Log.Format)
	}
	return errors.Join(p...)
}

func (c *Config) validateSocket(p *problems) {
	switch {
	case !strings.HasPrefix(c.Socket, "/"):
		p.add("socket", "must be an absolute path, got %q", c.Socket)
	case len(c.Socket) > MaxSocketPath:
		// bind(2) would say only "invalid argument".
		p.add("socket", "%s is %d bytes long; a unix socket path holds at most %d: choose a shorter one", c.Socket, len(c.Socket), MaxSocketPath)
	}
	if _, err := c.SocketMode(); err != nil {
		p.add("socketPermissions.mode", "%v", err)
	}
}

func (c *Config) validateThreshold(p *problems) {
	n := len(c.Backends)
	switch {
	case n == 0:
		p.add("backends", "at least one backend is required")
	case n > split.MaxShares:
		// Not threshold's fault, whatever ValidateThreshold says.
		p.add("backends", "at most %d backends, got %d", split.MaxShares, n)
	default:
		if err := split.ValidateThreshold(c.Threshold, n); err != nil {
			p.add("threshold", "%v", err)
		}
	}
	if c.MinThreshold != 0 && (c.MinThreshold < 1 || c.MinThreshold > c.Threshold) {
		p.add("minThreshold", "must be 1 to threshold (%d), got %d; leave it out to refuse every DEK below threshold", c.Threshold, c.MinThreshold)
	}
}

func (c *Config) validateBackends(p *problems) {
	seen := map[string]int{}
	for i, b := range c.Backends {
		field := fmt.Sprintf("backends[%d]", i)
		if err := kmsclients.ValidateName(b.Name); err != nil {
			p.add(field+".name", "%v", err)
		} else if j, dup := seen[b.Name]; dup {
			p.add(field+".name", "%q is already the name of backends[%d]", b.Name, j)
		}
		seen[b.Name] = i
		switch set := b.setKinds(); len(set) {
		case 0:
			p.add(field, "set exactly one backend kind (%s)", kindNames())
		case 1:
			if err := b.validate(); err != nil {
				p.add(field, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
			}
		default:
			p.add(field, "set exactly one backend kind, got %s", strings.Join(set, " and "))
		}
	}
	c.validateKeyFiles(p)
	for _, k := range kinds {
		if k.checkAll != nil {
			k.checkAll(c, p)
		}
	}
}

// validateKeyFiles refuses two local backends on one key file, however
// named (symlink, "../", hard link): one key would hold two shares, and
// serve would never make a first DEK.
func (c *Config) validateKeyFiles(p *problems) {
	type keyFile struct {
		index int
		path  string
		info  os.FileInfo
	}
	var files []keyFile
	for i, b := range c.Backends {
		name := keyFileOf(b)
		if name == "" {
			continue
		}
		path := resolvePath(name)
		info, _ := os.Stat(path)
		for _, f := range files {
			if f.path == path || (info != nil && f.info != nil && os.SameFile(info, f.info)) {
				other := fmt.Sprintf("backends[%d]", f.index)
				if prev := keyFileOf(c.Backends[f.index]); prev != name {
					other += " (" + prev + ")"
				}
				p.add(fmt.Sprintf("backends[%d].local.keyFile", i), "%s is already the key of %s: each backend needs a key of its own", name, other)
				break
			}
		}
		files = append(files, keyFile{i, path, info})
	}
}

// keyFileOf is a local backend's key file, or "".
func keyFileOf(b Backend) string {
	if l, ok := b.Spec.(*local.Config); ok && l != nil {
		return l.KeyFile
	}
	return ""
}

// resolvePath follows symlinks if the file exists, and cleans the path.
func resolvePath(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return filepath.Clean(path)
}

func (c *Config) validateHealth(p *problems) {
	if err := checkListen(c.Health.Listen); err != nil {
		p.add("health.listen", "want host:port such as %q (an empty host listens on every address), got %q: %v", DefaultHealthListen, c.Health.Listen, err)
	}
	if d := c.Health.ProbeInterval.Duration; d < time.Second {
		p.add("health.probeInterval", "must be at least 1s, got %s", d)
	}
	if d := c.Health.ProbeTimeout.Duration; d <= 0 || d > c.Health.ProbeInterval.Duration {
		p.add("health.probeTimeout", "must be positive and at most health.probeInterval, got %s", d)
	}
}

// checkListen accepts what net.Listen("tcp", addr) will.
func checkListen(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// ValidateOnHost checks what depends on serve's machine, left out of
// Validate so `recover` can read the config elsewhere: the socket group.
func (c *Config) ValidateOnHost() error {
	g := c.SocketPermissions.Group
	if g == "" {
		return nil
	}
	gid, err := strconv.ParseUint(g, 10, 32)
	if err != nil {
		// A numeric id needs no /etc/group entry: containers often lack
		// the host's groups.
		grp, err := user.LookupGroup(g)
		if err != nil {
			return fmt.Errorf("socketPermissions.group: %v: give a group of this machine, by name or numeric id", err)
		}
		if gid, err = strconv.ParseUint(grp.Gid, 10, 32); err != nil {
			return fmt.Errorf("socketPermissions.group: group %s has the id %q", g, grp.Gid)
		}
	}
	// Only root or CAP_CHOWN may give a file to a group it is not in.
	if os.Geteuid() != 0 && !inGroup(int(gid)) && !hasCapChown() {
		return fmt.Errorf("socketPermissions.group: this process (uid %d) is not in group %s and has no CAP_CHOWN, so it cannot give the socket to it: add the plugin's user to the group, or give it CAP_CHOWN, or run the plugin as root", os.Geteuid(), g)
	}
	return nil
}

// hasCapChown reports CAP_CHOWN (bit 0) in /proc/self/status's CapEff;
// false if unknown.
func hasCapChown() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			return err == nil && caps&1 != 0
		}
	}
	return false
}

// inGroup reports whether this process is in group gid.
func inGroup(gid int) bool {
	if os.Getegid() == gid {
		return true
	}
	groups, _ := os.Getgroups()
	return slices.Contains(groups, gid)
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

// BuildBackends constructs every backend. It fails only on config
// errors: an unusable key or server reports from Probe, Wrap and Unwrap,
// so serve starts on the others. On error, those built are closed.
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

// Marshal writes the config as YAML.
func (c *Config) Marshal() ([]byte, error) { return yaml.Marshal(c) }

// ThresholdFloor is minThreshold, or threshold if unset.
func (c *Config) ThresholdFloor() int {
	if c.MinThreshold > 0 {
		return c.MinThreshold
	}
	return c.Threshold
}
