// Package monitoring holds Trousseau's alert rules and Grafana dashboard,
// the files beside it that operators install, and writes the dashboard
// from the panels defined here (go generate; a test checks the files).
package monitoring

//go:generate go run ./gen

import (
	"bytes"
	"encoding/json"
	"strings"
)

// Where the files are, relative to the repository's root.
const (
	Dir           = "deploy/monitoring"
	RulesFile     = "trousseau-rules.yaml"
	DashboardFile = "trousseau-dashboard.json"
	// ChartFiles is where the chart keeps its copies.
	ChartFiles = "deploy/helm/trousseau/files"
)

// Row is a titled row of panels.
type Row struct {
	Title  string
	Panels []Panel
}

// Panel is one dashboard panel; its Description is also the panel's entry
// in docs/operations.md.
type Panel struct {
	Title, Description string
	Type               string // timeseries, stat, state-timeline or table
	Width              int    // of Grafana's 24 columns
	Unit               string
	Queries            []Query
	Thresholds         []Step
	Mapping            map[string]string // value to text, as a stat or state timeline shows it
}

// Query is one PromQL query of a panel, with Grafana's legend template.
type Query struct{ Expr, Legend string }

// Step is a threshold: Color from Value up (the first has no value).
type Step struct {
	Color string
	Value *float64
}

func at(v float64) *float64 { return &v }

// sel selects the dashboard's cluster and nodes; cluster is an optional
// label of your scrape (all when absent).
const sel = `cluster=~"$cluster", instance=~"$instance"`

func s(metric string, matchers ...string) string {
	return metric + "{" + strings.Join(append([]string{sel}, matchers...), ", ") + "}"
}

func rate(metric string, matchers ...string) string {
	return "rate(" + s(metric, matchers...) + "[$__rate_interval])"
}

func increase(metric string) string {
	return "increase(" + s(metric) + "[$__rate_interval])"
}

var upDown = map[string]string{"0": "down", "1": "up"}

// Rows are the dashboard's panels, top to bottom.
var Rows = []Row{
	{"Health and custody", []Panel{
		{Title: "Healthy", Type: "stat", Width: 6,
			Description: "Per node, 1 (ok) while a quorum of backends answers and the current DEK is usable, else 0: reads of DEKs not cached fail (TrousseauUnhealthy).",
			Queries:     []Query{{s("trousseau_healthy"), "{{instance}}"}},
			Mapping:     map[string]string{"0": "not ok", "1": "ok"}, Thresholds: []Step{{"red", nil}, {"green", at(1)}}},
		{Title: "Backends reachable and threshold", Type: "timeseries", Width: 9,
			Description: "Per node, the backends that answered the last probe, against the threshold k: below k the quorum is lost.",
			Queries:     []Query{{s("trousseau_backends_reachable"), "{{instance}}"}, {"max(" + s("trousseau_threshold") + ")", "threshold (k)"}}},
		{Title: "Custody margin", Type: "timeseries", Width: 9,
			Description: "Per node, the backends whose share of the current DEK checked out at the last probe, minus k: at 0 one more loss makes the DEK unrecoverable (TrousseauCustodyMarginLow), below 0 it cannot be recovered from its shares (TrousseauCustodyLost).",
			Queries:     []Query{{s("trousseau_dek_custody_margin"), "{{instance}}"}},
			Thresholds:  []Step{{"red", nil}, {"orange", at(0)}, {"green", at(1)}}},
	}},
	{"Backends", []Panel{
		{Title: "Backends up", Type: "state-timeline", Width: 12,
			Description: "Per node and backend, whether it answered its probes (TrousseauBackendDown after 5 minutes down).",
			Queries:     []Query{{s("trousseau_backend_up"), "{{backend}} on {{instance}}"}}, Mapping: upDown},
		{Title: "Share checks", Type: "state-timeline", Width: 12,
			Description: "Per node and backend, whether its share of the current DEK checked out at the last probe: a backend can be up and still fail here (a decrypt grant revoked, a key disabled).",
			Queries:     []Query{{s("trousseau_dek_share_ok"), "{{backend}} on {{instance}}"}}, Mapping: map[string]string{"0": "fails", "1": "ok"}},
		{Title: "Backend errors", Type: "timeseries", Width: 8, Unit: "ops",
			Description: "Backend calls (wrap, unwrap, probe) that failed, per second, by backend, operation and kind of error.",
			Queries:     []Query{{"sum by (backend, operation, result) (" + rate("trousseau_backend_operations_total", `result!="ok"`) + ")", "{{backend}} {{operation}} {{result}}"}}},
		{Title: "Backend latency (p99)", Type: "timeseries", Width: 8, Unit: "s",
			Description: "The 99th percentile of backend call latency, by backend and operation.",
			Queries:     []Query{{"histogram_quantile(0.99, sum by (backend, operation, le) (" + rate("trousseau_backend_operation_duration_seconds_bucket") + "))", "{{backend}} {{operation}}"}}},
		{Title: "Share mismatches", Type: "timeseries", Width: 8,
			Description: "Shares a backend gave back that did not fit a DEK recovered from the others: a lying or tampered custodian (TrousseauShareMismatch).",
			Queries:     []Query{{"sum by (backend) (" + increase("trousseau_backend_share_mismatches_total") + ")", "{{backend}}"}}},
	}},
	{"Requests from kube-apiserver", []Panel{
		{Title: "Requests by method", Type: "timeseries", Width: 6, Unit: "reqps",
			Description: "KMS gRPC requests per second (Encrypt, Decrypt, Status), by method.",
			Queries:     []Query{{"sum by (method) (" + rate("trousseau_grpc_requests_total") + ")", "{{method}}"}}},
		{Title: "Errors by method and code", Type: "timeseries", Width: 6, Unit: "reqps",
			Description: "Requests that did not return OK, per second, by method and gRPC code (docs/operations.md, gRPC errors, says what each code means).",
			Queries:     []Query{{"sum by (method, code) (" + rate("trousseau_grpc_requests_total", `code!="OK"`) + ")", "{{method}} {{code}}"}}},
		{Title: "Latency by method", Type: "timeseries", Width: 6, Unit: "s",
			Description: "The median and 99th percentile of request latency, by method.",
			Queries: []Query{
				{"histogram_quantile(0.5, sum by (method, le) (" + rate("trousseau_grpc_request_duration_seconds_bucket") + "))", "p50 {{method}}"},
				{"histogram_quantile(0.99, sum by (method, le) (" + rate("trousseau_grpc_request_duration_seconds_bucket") + "))", "p99 {{method}}"},
			}},
		{Title: "DEK cache hit ratio", Type: "timeseries", Width: 6, Unit: "percentunit",
			Description: "Per node, the share of Decrypts whose DEK was cached: a miss unwraps the DEK with k backends.",
			Queries: []Query{{"sum by (instance) (" + rate("trousseau_dek_cache_lookups_total", `result="hit"`) + ") / sum by (instance) (" +
				rate("trousseau_dek_cache_lookups_total") + ")", "{{instance}}"}}},
	}},
	{"DEKs and HA agreement", []Panel{
		{Title: "Distinct current DEKs", Type: "stat", Width: 4,
			Description: "How many different current DEKs the selected nodes hold: 1 when they agree (TrousseauKeyIDDisagreement after 10 minutes above 1).",
			Queries:     []Query{{"count(count by (key_id_hash) (" + s("trousseau_dek_current_info") + "))", "DEKs"}},
			Thresholds:  []Step{{"green", nil}, {"red", at(2)}}},
		{Title: "Current DEK per node", Type: "state-timeline", Width: 10,
			Description: "Each node's current DEK over time, by kube-apiserver's hash of its key_id and how the node got it (made, stored or adopted): rows with one hash are nodes that agree.",
			Queries:     []Query{{s("trousseau_dek_current_info"), "{{instance}} {{key_id_hash}} ({{origin}})"}}},
		{Title: "DEK generation", Type: "timeseries", Width: 10,
			Description: "Per node, the generation of the current DEK: one step up at each rotation, equal on every node once they agree.",
			Queries:     []Query{{s("trousseau_dek_generation"), "{{instance}}"}}},
		{Title: "Rotations", Type: "timeseries", Width: 6,
			Description: "Rotations done (ok) and failed attempts (postponed), per node (TrousseauRotationPostponed).",
			Queries:     []Query{{"sum by (instance, result) (" + increase("trousseau_dek_rotations_total") + ")", "{{instance}} {{result}}"}}},
		{Title: "Adoptions", Type: "timeseries", Width: 6,
			Description: "Newer DEKs made by another node and adopted here: how a rotation spreads.",
			Queries:     []Query{{"sum by (instance) (" + increase("trousseau_dek_adoptions_total") + ")", "{{instance}}"}}},
		{Title: "DEKs set aside", Type: "timeseries", Width: 6,
			Description: "Per node, stored DEKs set aside since the plugin started because their keys no longer open them (TrousseauDEKUnusable).",
			Queries:     []Query{{s("trousseau_dek_unusable_total"), "{{instance}}"}}},
		{Title: "Current DEK age on the node", Type: "timeseries", Width: 6, Unit: "s",
			Description: "Per node, how long the current DEK has been current there (since a restart or adoption at most): compare with rotation.maxAge (TrousseauRotationOverdue).",
			Queries:     []Query{{"time() - " + s("trousseau_dek_current_since_timestamp_seconds"), "{{instance}}"}}},
	}},
	{"Build", []Panel{
		{Title: "Build per node", Type: "table", Width: 24,
			Description: "Per node, the plugin's version, VCS revision, Go version and whether FIPS 140-3 mode is on.",
			Queries:     []Query{{s("trousseau_build_info"), ""}}},
	}},
}

// Dashboard is the Grafana dashboard of Rows, as written to
// trousseau-dashboard.json.
func Dashboard() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(dashboard(Rows))
	return b.Bytes(), err
}
