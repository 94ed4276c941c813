package grpcserver

import (
	"crypto/fips140"
	"crypto/sha256"
	"fmt"
	"maps"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/trousseau-io/trousseau/envelope"
	"github.com/trousseau-io/trousseau/internal/fipsmode"
	"github.com/trousseau-io/trousseau/kmsclients"
)

// Metrics are Trousseau's Prometheus metrics. Every label is bounded: gRPC
// method and code, backend name (from the config), operation and result
// kind. Never error text, key ids or key material.
type Metrics struct {
	Registry *prometheus.Registry

	requests       *prometheus.CounterVec
	requestSeconds *prometheus.HistogramVec
	backendOps     *prometheus.CounterVec
	backendSeconds *prometheus.HistogramVec
	backendUp      *prometheus.GaugeVec
	cacheLookups   *prometheus.CounterVec
	cacheHit       prometheus.Counter
	cacheMiss      prometheus.Counter
	rotations      *prometheus.CounterVec
	unusable       prometheus.Counter
	adopted        prometheus.Counter
	generation     prometheus.Gauge
	custodyMargin  *prometheus.GaugeVec
	officerMargin  *prometheus.GaugeVec
	currentInfo    *prometheus.GaugeVec
	shareOK        *prometheus.GaugeVec
	shareMismatch  *prometheus.CounterVec
	currentSince   prometheus.Gauge
	pendingSince   prometheus.Gauge
	threshold      prometheus.Gauge
	reachable      prometheus.Gauge
	healthy        prometheus.Gauge

	seriesMu sync.Mutex // serialises adding to series
	series   atomic.Pointer[map[requestKey]requestSeries]
}

// requestKey and requestSeries: a method and code's series, bound on
// first use so a request finds them in one lock-free map lookup.
type requestKey struct {
	method string
	code   codes.Code
}

type requestSeries struct {
	count   prometheus.Counter
	seconds prometheus.Observer
}

var (
	_ envelope.Observer              = (*Metrics)(nil)
	_ envelope.ShareMismatchObserver = (*Metrics)(nil)
)

// MetricsOption sets what [NewMetrics] reports about the binary.
type MetricsOption func(*buildInfo)

type buildInfo struct{ version string }

// WithVersion is the binary's version in trousseau_build_info (default "unknown").
func WithVersion(v string) MetricsOption { return func(b *buildInfo) { b.version = v } }

// NewMetrics registers Trousseau's metrics, Go and process collectors on
// a registry of their own.
func NewMetrics(opts ...MetricsOption) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg}
	m.series.Store(&map[requestKey]requestSeries{})
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	f(newBuildInfo(opts))
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trousseau_grpc_requests_total", Help: "KMS gRPC requests by method and status code.",
	}, []string{"method", "code"})
	m.requestSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "trousseau_grpc_request_duration_seconds", Help: "KMS gRPC request latency by method and status code.",
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"method", "code"})
	m.backendOps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trousseau_backend_operations_total", Help: "Backend operations by backend, operation (wrap, unwrap, probe) and result kind.",
	}, []string{"backend", "operation", "result"})
	m.backendSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "trousseau_backend_operation_duration_seconds", Help: "Backend operation latency.",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"backend", "operation"})
	m.backendUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trousseau_backend_up", Help: "1 if the backend answered its last probe.",
	}, []string{"backend"})
	m.cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trousseau_dek_cache_lookups_total", Help: "DEK cache lookups on Decrypt, by result (hit, miss).",
	}, []string{"result"})
	m.rotations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trousseau_dek_rotations_total", Help: "DEK rotations (including the first DEK), by result (ok, postponed).",
	}, []string{"result"})
	m.unusable = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trousseau_dek_unusable_total",
		Help: "Stored current DEKs that could not be unlocked although every backend answered, set aside and replaced (their data is unreadable until the old keys are back).",
	})
	m.adopted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "trousseau_dek_adoptions_total", Help: "Newer DEKs made by another control-plane node and adopted here as current.",
	})
	m.generation = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trousseau_dek_generation", Help: "Generation of the current DEK: equal on every node once they agree.",
	})
	m.currentSince = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trousseau_dek_current_since_timestamp_seconds", Help: "When the current DEK became current on this node (Unix time).",
	})
	m.custodyMargin = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trousseau_dek_custody_margin",
		Help: "Backends whose share of the current DEK checked out at the last probe, minus k: at 0, one more loss makes it unrecoverable. Labelled with the DEK's key_id_hash (the stored DEK's while it is not unlocked yet); absent while there is none or its drill failed.",
	}, []string{"key_id_hash"})
	m.officerMargin = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trousseau_dek_officer_margin",
		Help: "Officers of the current DEK's recovery branch minus k' (officers are offline, never down: this is the policy's margin). Absent without a recovery branch.",
	}, []string{"key_id_hash"})
	m.currentInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trousseau_dek_current_info",
		Help: "1 for the current DEK: its key_id_hash (kube-apiserver's hash of the key_id, the same on every node once they agree) and origin (made, stored or adopted).",
	}, []string{"key_id_hash", "origin"})
	m.shareOK = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trousseau_dek_share_ok", Help: "1 if the backend's share of the current DEK checked out at the last probe.",
	}, []string{"backend"})
	m.pendingSince = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "trousseau_dek_rotation_pending_since_timestamp_seconds",
		Help: "When the rotation (or first DEK) wanted now was first postponed (Unix time); 0 while none is pending. Its cause is in /readyz and the log.",
	})
	m.shareMismatch = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trousseau_backend_share_mismatches_total",
		Help: "Shares a backend returned that did not fit a DEK other backends' shares proved (a lying or broken custodian), on Decrypt or at a probe's drill.",
	}, []string{"backend"})
	m.threshold = prometheus.NewGauge(prometheus.GaugeOpts{Name: "trousseau_threshold", Help: "Backends needed to recover a DEK (k)."})
	m.reachable = prometheus.NewGauge(prometheus.GaugeOpts{Name: "trousseau_backends_reachable", Help: "Backends that answered the last probe."})
	m.healthy = prometheus.NewGauge(prometheus.GaugeOpts{Name: "trousseau_healthy", Help: "1 when Status reports ok."})
	for _, c := range []prometheus.Collector{m.requests, m.requestSeconds, m.backendOps, m.backendSeconds, m.backendUp,
		m.cacheLookups, m.rotations, m.unusable, m.adopted, m.generation, m.custodyMargin, m.officerMargin, m.currentInfo, m.shareOK, m.shareMismatch, m.currentSince, m.pendingSince, m.threshold, m.reachable, m.healthy,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	m.cacheHit, m.cacheMiss = m.cacheLookups.WithLabelValues("hit"), m.cacheLookups.WithLabelValues("miss")
	for _, r := range []string{"ok", "postponed"} {
		m.rotations.WithLabelValues(r)
	}
	return m
}

// newBuildInfo is trousseau_build_info, so dashboards can tell builds apart.
func newBuildInfo(opts []MetricsOption) prometheus.Collector {
	b := buildInfo{version: "unknown"}
	for _, o := range opts {
		o(&b)
	}
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "trousseau_build_info", Help: "1, labelled with the binary's version, VCS revision, Go version, whether FIPS 140-3 mode is on and the Go Cryptographic Module built in.",
	}, []string{"version", "revision", "goversion", "fips", "fips_module"})
	g.WithLabelValues(b.version, vcsRevision(), runtime.Version(), strconv.FormatBool(fips140.Enabled()), fipsmode.Module()).Set(1)
	return g
}

// vcsRevision is the binary's commit, or "unknown" (-buildvcs=false, as
// in the image).
func vcsRevision() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// BackendCall implements envelope.Observer.
func (m *Metrics) BackendCall(backend, op string, err error, took time.Duration) {
	m.backendOps.WithLabelValues(backend, op, kmsclients.Kind(err)).Inc()
	m.backendSeconds.WithLabelValues(backend, op).Observe(took.Seconds())
}

// CacheLookup implements envelope.Observer.
func (m *Metrics) CacheLookup(hit bool) {
	if hit {
		m.cacheHit.Inc()
	} else {
		m.cacheMiss.Inc()
	}
}

// Rotation implements envelope.Observer.
func (m *Metrics) Rotation(err error) {
	if err != nil {
		m.rotations.WithLabelValues("postponed").Inc()
	} else {
		m.rotations.WithLabelValues("ok").Inc()
	}
}

// DEKUnusable implements envelope.Observer.
func (m *Metrics) DEKUnusable() { m.unusable.Inc() }

// Adopted implements envelope.Observer.
func (m *Metrics) Adopted() { m.adopted.Inc() }

// ShareMismatch implements envelope.ShareMismatchObserver.
func (m *Metrics) ShareMismatch(backend string) { m.shareMismatch.WithLabelValues(backend).Inc() }

func (m *Metrics) observeProbe(s Snapshot) {
	m.threshold.Set(float64(s.Threshold))
	// Current DEK only: no series without a DEK (a margin of 0 would page
	// for the wrong reason) or left from an older one.
	m.custodyMargin.Reset()
	m.shareOK.Reset()
	if c := s.Custody; c != nil {
		m.custodyMargin.WithLabelValues(KeyIDHash(c.KeyID)).Set(float64(c.Margin()))
		for _, sh := range c.Shares {
			ok := 0.0
			if sh.OK {
				ok = 1
			}
			m.shareOK.WithLabelValues(sh.Backend).Set(ok)
		}
	}
	m.officerMargin.Reset()
	if o := s.Officers; o != nil && s.Current.KeyID != "" {
		m.officerMargin.WithLabelValues(KeyIDHash(s.Current.KeyID)).Set(float64(o.Officers - o.Threshold))
	}
	m.currentInfo.Reset()
	if !s.Current.Since.IsZero() {
		m.generation.Set(float64(s.Current.Generation))
		m.currentSince.Set(float64(s.Current.Since.Unix()))
		m.currentInfo.WithLabelValues(KeyIDHash(s.Current.KeyID), originLabel(s.Current.Origin)).Set(1)
	}
	m.reachable.Set(float64(s.Reachable))
	m.pendingSince.Set(0)
	if s.RotationPending != "" && !s.PendingSince.IsZero() {
		m.pendingSince.Set(float64(s.PendingSince.Unix()))
	}
	for _, b := range s.Backends {
		up := 0.0
		if b.Up {
			up = 1
		}
		m.backendUp.WithLabelValues(b.Name).Set(up)
		m.shareMismatch.WithLabelValues(b.Name) // 0 until one, so alerts see the series
	}
	if s.Healthz == healthzOK {
		m.healthy.Set(1)
	} else {
		m.healthy.Set(0)
	}
}

// KeyIDHash is kube-apiserver's key_id label
// (apiserver_envelope_encryption_key_id_hash_*): "sha256:" and the hex
// SHA-256, so the two join and no raw key_id is a label.
func KeyIDHash(keyID string) string {
	if keyID == "" {
		return ""
	}
	return fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(keyID)))
}

// originLabel is a DEK origin as a short label value.
func originLabel(origin string) string {
	switch origin {
	case envelope.OriginMade:
		return "made"
	case envelope.OriginStored:
		return "stored"
	case envelope.OriginAdopted:
		return "adopted"
	}
	return "unknown"
}

// observeRequest counts and times a request by method and code.
func (m *Metrics) observeRequest(method string, err error, start time.Time) {
	s := m.requestSeries(method, status.Code(err))
	s.count.Inc()
	s.seconds.Observe(time.Since(start).Seconds())
}

// requestSeries returns method and code's series. gRPC refuses unknown
// methods before any interceptor, so the map stays small.
func (m *Metrics) requestSeries(method string, code codes.Code) requestSeries {
	k := requestKey{method, code}
	if s, ok := (*m.series.Load())[k]; ok {
		return s
	}
	m.seriesMu.Lock()
	defer m.seriesMu.Unlock()
	series := maps.Clone(*m.series.Load())
	s, ok := series[k]
	if !ok {
		s = requestSeries{m.requests.WithLabelValues(method, code.String()), m.requestSeconds.WithLabelValues(method, code.String())}
		series[k] = s
		m.series.Store(&series)
	}
	return s
}
