package kmsclients

import "time"

// The probe defaults, written here once for the config (health.*), the
// plugin's prober and the commands an operator runs.
const (
	// DefaultProbeInterval is how often the serving plugin probes every
	// backend (health.probeInterval).
	DefaultProbeInterval = 30 * time.Second
	// DefaultProbeTimeout bounds each of those probes (health.probeTimeout).
	// Left unset, the timeout is this or the interval, whichever is
	// shorter.
	DefaultProbeTimeout = 5 * time.Second
	// DefaultCommandProbeTimeout bounds each backend's probe in a command
	// an operator runs and waits on (config check, recover, drill,
	// decrypt-value) and in a recovery keyring opened without a timeout:
	// longer than the prober's, since no API server waits on it, and a
	// slow backend is worth hearing from there.
	DefaultCommandProbeTimeout = 10 * time.Second
)
