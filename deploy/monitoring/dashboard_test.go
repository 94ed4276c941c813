package monitoring

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const regenerate = "run `cd deploy && go generate ./monitoring`"

// TestFilesAreGenerated: the committed dashboard is the one Rows give,
// and the chart's copies of the dashboard and the rules are the same
// files.
func TestFilesAreGenerated(t *testing.T) {
	r := root(t)
	want, err := Dashboard()
	if err != nil {
		t.Fatal(err)
	}
	rules, err := os.ReadFile(filepath.Join(r, Dir, RulesFile))
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]byte{
		filepath.Join(Dir, DashboardFile):        want,
		filepath.Join(ChartFiles, DashboardFile): want,
		filepath.Join(ChartFiles, RulesFile):     rules,
	} {
		got, err := os.ReadFile(filepath.Join(r, path))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is not up to date (%v): %s", path, err, regenerate)
		}
	}
}

// TestDashboardLayout: the JSON is a dashboard Grafana can load: unique
// panel ids, panels within the 24 columns and not overlapping, every
// panel with a title, a description and a query of the data source.
func TestDashboardLayout(t *testing.T) {
	var d gDashboard
	b, err := Dashboard()
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		t.Fatal(err)
	}
	ids := map[int]bool{}
	taken := map[[2]int]string{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.X < 0 || g.W < 1 || g.X+g.W > 24 || g.H < 1 {
			t.Errorf("%s: gridPos %+v outside the 24 columns", p.Title, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[[2]int{x, y}]; ok {
					t.Fatalf("%s overlaps %s at %d,%d", p.Title, other, x, y)
				}
				taken[[2]int{x, y}] = p.Title
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Title == "" || p.Description == "" || len(p.Targets) == 0 || p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %d %q: want a title, a description and queries of ${datasource}", p.ID, p.Title)
		}
	}
}

// grafanaVars are what Grafana puts in place of the dashboard's variables
// before it sends a query.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m")

// TestDashboardQueriesParse: promtool parses every panel query, and every
// variable's query, as PromQL (as recording rules of a throwaway file).
func TestDashboardQueriesParse(t *testing.T) {
	type recording struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var recs []recording
	for i, q := range dashboardQueries() {
		recs = append(recs, recording{fmt.Sprintf("dashboard:query_%d", i), grafanaVars.Replace(q)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": recs}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "dashboard.yaml"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Log(runPromtool(t, dir, "check", "rules", "dashboard.yaml"))
}

var labelValuesRE = regexp.MustCompile(`^label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// dashboardQueries are the PromQL of every panel, and the selectors of the
// variables' label_values(selector, label) queries.
func dashboardQueries() []string {
	var out []string
	for _, r := range Rows {
		for _, p := range r.Panels {
			for _, q := range p.Queries {
				out = append(out, q.Expr)
			}
		}
	}
	for _, v := range variables() {
		if m := labelValuesRE.FindStringSubmatch(v.Definition); m != nil {
			out = append(out, m[1])
		}
	}
	return out
}

// TestPanelsInDocs: docs/operations.md describes every panel, in the
// dashboard's words.
func TestPanelsInDocs(t *testing.T) {
	list := panelList()
	if !strings.Contains(readDoc(t), list) {
		t.Errorf("docs/operations.md does not describe the dashboard's panels as Rows do; put this in its place:\n\n%s", list)
	}
}

func panelList() string {
	var b strings.Builder
	for i, r := range Rows {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "%s:\n\n", r.Title)
		for _, p := range r.Panels {
			fmt.Fprintf(&b, "- **%s**: %s\n", p.Title, p.Description)
		}
	}
	return b.String()
}
