package monitoring

import (
	"cmp"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/trousseau-io/trousseau/deploy/internal/repo"
)

// TestRulesWithPromtool: Prometheus's own checker accepts the rules, and
// every case of trousseau-rules.test.yaml passes.
func TestRulesWithPromtool(t *testing.T) {
	dir := filepath.Join(root(t), Dir)
	t.Log(runPromtool(t, dir, "check", "rules", "--lint=all", "--lint-fatal", RulesFile))
	t.Log(runPromtool(t, dir, "test", "rules", "trousseau-rules.test.yaml"))
}

// TestEveryAlertFiresAndStaysQuiet: the promtool tests have, for every
// alert, a case where it fires and one where it does not, and test no
// alert the rules do not have.
func TestEveryAlertFiresAndStaysQuiet(t *testing.T) {
	var tf struct {
		RuleFiles          []string `json:"rule_files"`
		EvaluationInterval string   `json:"evaluation_interval"`
		Tests              []struct {
			Name          string `json:"name"`
			Interval      string `json:"interval"`
			InputSeries   []any  `json:"input_series"`
			AlertRuleTest []struct {
				EvalTime  string `json:"eval_time"`
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	readYAML(t, filepath.Join(root(t), Dir, "trousseau-rules.test.yaml"), &tf)
	if !slices.Equal(tf.RuleFiles, []string{RulesFile}) {
		t.Errorf("rule_files %q, want [%s]", tf.RuleFiles, RulesFile)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, c := range tf.Tests {
		for _, a := range c.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	known := map[string]bool{}
	for _, a := range alerts(t) {
		known[a.Alert] = true
		if !fires[a.Alert] {
			t.Errorf("%s: no case where it fires", a.Alert)
		}
		if !quiet[a.Alert] {
			t.Errorf("%s: no case where it stays quiet (exp_alerts: [])", a.Alert)
		}
	}
	maps.Copy(fires, quiet)
	for name := range fires {
		if !known[name] {
			t.Errorf("the tests check %s, which is not an alert of %s", name, RulesFile)
		}
	}
}

// runbookBase is where every alert's runbook_url points, before the anchor.
var runbookBase = repo.SourceURL + "/blob/main/docs/operations.md#"

// TestAlertsSayWhatToDo: every alert has a severity (warning or
// critical), a summary, a description, and a runbook_url whose anchor is
// a heading of docs/operations.md named after the alert.
func TestAlertsSayWhatToDo(t *testing.T) {
	anchors := headingAnchors(readDoc(t))
	names := map[string]bool{}
	for _, a := range alerts(t) {
		if names[a.Alert] {
			t.Errorf("%s: two alerts of that name", a.Alert)
		}
		names[a.Alert] = true
		if sev := a.Labels["severity"]; sev != "warning" && sev != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", a.Alert, sev)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(a.Annotations[k]) == "" {
				t.Errorf("%s: no %s", a.Alert, k)
			}
		}
		want := runbookBase + strings.ToLower(a.Alert)
		if a.Annotations["runbook_url"] != want {
			t.Errorf("%s: runbook_url %q, want %q", a.Alert, a.Annotations["runbook_url"], want)
		}
		if !anchors[strings.ToLower(a.Alert)] {
			t.Errorf("%s: docs/operations.md has no heading %q for its runbook_url", a.Alert, "#### "+a.Alert)
		}
	}
}

var headingRE = regexp.MustCompile(`(?m)^#{1,6} +(.+?) *$`)

// headingAnchors are the anchors GitHub gives docs' headings: lower case,
// spaces as hyphens, punctuation other than - and _ dropped.
func headingAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	for _, m := range headingRE.FindAllStringSubmatch(doc, -1) {
		var b strings.Builder
		for _, r := range strings.ToLower(m[1]) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
				b.WriteRune(r)
			}
		}
		out[b.String()] = true
	}
	return out
}

// TestAlertsTableInDocs: docs/operations.md's table of alerts is the one
// the rules file gives.
func TestAlertsTableInDocs(t *testing.T) {
	table := alertsTable(alerts(t))
	if !strings.Contains(readDoc(t), table) {
		t.Errorf("docs/operations.md does not have the alerts table of %s; put this in its place:\n\n%s", RulesFile, table)
	}
}

func alertsTable(rules []rule) string {
	var b strings.Builder
	b.WriteString("| alert | severity | fires when | for |\n|---|---|---|---|\n")
	for _, r := range rules {
		expr := strings.Join(strings.Fields(r.Expr), " ")
		fmt.Fprintf(&b, "| [%s](#%s) | %s | `%s` | %s |\n", r.Alert, strings.ToLower(r.Alert), r.Labels["severity"], expr, cmp.Or(r.For, "at once"))
	}
	return b.String()
}
