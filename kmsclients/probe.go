package kmsclients

import "time"

// Probe defaults, shared by the config, the plugin's prober and commands.
const (
	// DefaultProbeInterval is health.probeInterval's default.
	DefaultProbeInterval = 30 * time.Second
	// DefaultProbeTimeout is health.probeTimeout's, capped by the interval.
	DefaultProbeTimeout = 5 * time.Second
	// DefaultCommandProbeTimeout bounds probes in operator commands and
	// recovery: longer, as no API server waits on them.
	DefaultCommandProbeTimeout = 10 * time.Second
)

// ProbeTimeoutFor is the probe deadline where none is set: the default,
// or the interval if shorter, so that a short interval is followed rather
// than refused over a value no one wrote.
func ProbeTimeoutFor(interval time.Duration) time.Duration {
	return min(DefaultProbeTimeout, interval)
}
