package monitoring

import (
	"fmt"
	"maps"
	"slices"
)

// Grafana's dashboard JSON model: the fields this dashboard sets; Grafana
// fills in the rest.
type (
	gDashboard struct {
		UID           string      `json:"uid"`
		Title         string      `json:"title"`
		Description   string      `json:"description"`
		Tags          []string    `json:"tags"`
		SchemaVersion int         `json:"schemaVersion"`
		Editable      bool        `json:"editable"`
		GraphTooltip  int         `json:"graphTooltip"`
		Refresh       string      `json:"refresh"`
		Time          gTime       `json:"time"`
		Templating    gList[gVar] `json:"templating"`
		Annotations   gList[any]  `json:"annotations"`
		Panels        []gPanel    `json:"panels"`
	}
	gTime struct {
		From string `json:"from"`
		To   string `json:"to"`
	}
	gList[T any] struct {
		List []T `json:"list"`
	}
	gVar struct {
		Name       string       `json:"name"`
		Label      string       `json:"label"`
		Type       string       `json:"type"`
		Datasource *gDatasource `json:"datasource,omitempty"`
		Query      any          `json:"query"`
		Definition string       `json:"definition,omitempty"`
		IncludeAll bool         `json:"includeAll"`
		AllValue   string       `json:"allValue,omitempty"`
		Multi      bool         `json:"multi"`
		Refresh    int          `json:"refresh"`
		Sort       int          `json:"sort,omitempty"`
	}
	gDatasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	gPanel struct {
		ID              int            `json:"id"`
		Type            string         `json:"type"`
		Title           string         `json:"title"`
		Description     string         `json:"description,omitempty"`
		GridPos         gGridPos       `json:"gridPos"`
		Collapsed       *bool          `json:"collapsed,omitempty"`
		Panels          []gPanel       `json:"panels,omitempty"`
		Datasource      *gDatasource   `json:"datasource,omitempty"`
		Targets         []gTarget      `json:"targets,omitempty"`
		FieldConfig     *gFieldConfig  `json:"fieldConfig,omitempty"`
		Options         map[string]any `json:"options,omitempty"`
		Transformations []any          `json:"transformations,omitempty"`
	}
	gGridPos struct {
		H int `json:"h"`
		W int `json:"w"`
		X int `json:"x"`
		Y int `json:"y"`
	}
	gTarget struct {
		RefID        string       `json:"refId"`
		Datasource   *gDatasource `json:"datasource"`
		Expr         string       `json:"expr"`
		LegendFormat string       `json:"legendFormat,omitempty"`
		Format       string       `json:"format"`
		Instant      bool         `json:"instant"`
		Range        bool         `json:"range"`
	}
	gFieldConfig struct {
		Defaults  gDefaults `json:"defaults"`
		Overrides []any     `json:"overrides"`
	}
	gDefaults struct {
		Unit       string      `json:"unit,omitempty"`
		Color      *gColor     `json:"color,omitempty"`
		Thresholds *gThreshold `json:"thresholds,omitempty"`
		Mappings   []gMapping  `json:"mappings,omitempty"`
	}
	gColor struct {
		Mode string `json:"mode"`
	}
	gThreshold struct {
		Mode  string  `json:"mode"`
		Steps []gStep `json:"steps"`
	}
	gStep struct {
		Color string   `json:"color"`
		Value *float64 `json:"value"`
	}
	gMapping struct {
		Type    string                  `json:"type"`
		Options map[string]gMappingText `json:"options"`
	}
	gMappingText struct {
		Text  string `json:"text"`
		Index int    `json:"index"`
	}
)

// panelHeight is every panel's height in grid units.
const panelHeight = 8

var prometheus = &gDatasource{Type: "prometheus", UID: "${datasource}"}

func dashboard(rows []Row) gDashboard {
	d := gDashboard{
		UID: "trousseau", Title: "Trousseau",
		Description:   "Trousseau KMS plugin: quorum, custody, backends, requests, DEKs and agreement between control-plane nodes (docs/operations.md, Monitoring).",
		Tags:          []string{"trousseau", "kms"},
		SchemaVersion: 39, Editable: true, GraphTooltip: 1, Refresh: "1m",
		Time:       gTime{From: "now-6h", To: "now"},
		Templating: gList[gVar]{List: variables()},
	}
	d.Annotations.List = []any{}
	id, y := 1, 0
	for _, r := range rows {
		d.Panels = append(d.Panels, gPanel{ID: id, Type: "row", Title: r.Title, GridPos: gGridPos{H: 1, W: 24, Y: y}, Collapsed: new(bool)})
		id, y = id+1, y+1
		x := 0
		for _, p := range r.Panels {
			if x+p.Width > 24 {
				x, y = 0, y+panelHeight
			}
			d.Panels = append(d.Panels, panel(id, p, gGridPos{H: panelHeight, W: p.Width, X: x, Y: y}))
			id, x = id+1, x+p.Width
		}
		y += panelHeight
	}
	return d
}

// variables are the data source, and the cluster and nodes to show.
func variables() []gVar {
	query := func(name, label, q string) gVar {
		return gVar{Name: name, Label: label, Type: "query", Datasource: prometheus,
			Query: map[string]string{"query": q, "refId": name}, Definition: q,
			IncludeAll: true, AllValue: ".*", Multi: true, Refresh: 2, Sort: 1}
	}
	return []gVar{
		{Name: "datasource", Label: "Data source", Type: "datasource", Query: "prometheus", Refresh: 1},
		query("cluster", "Cluster", "label_values(trousseau_build_info, cluster)"),
		query("instance", "Node", `label_values(trousseau_build_info{cluster=~"$cluster"}, instance)`),
	}
}

func panel(id int, p Panel, pos gGridPos) gPanel {
	g := gPanel{ID: id, Type: p.Type, Title: p.Title, Description: p.Description, GridPos: pos, Datasource: prometheus,
		FieldConfig: &gFieldConfig{Defaults: gDefaults{Unit: p.Unit}, Overrides: []any{}}}
	for i, q := range p.Queries {
		t := gTarget{RefID: fmt.Sprintf("%c", 'A'+i), Datasource: prometheus, Expr: q.Expr, LegendFormat: q.Legend, Format: "time_series", Range: true}
		if p.Type == "table" {
			t.Format, t.Instant, t.Range = "table", true, false
		}
		g.Targets = append(g.Targets, t)
	}
	if len(p.Thresholds) > 0 {
		th := &gThreshold{Mode: "absolute"}
		for _, s := range p.Thresholds {
			th.Steps = append(th.Steps, gStep(s))
		}
		g.FieldConfig.Defaults.Thresholds, g.FieldConfig.Defaults.Color = th, &gColor{Mode: "thresholds"}
	}
	if len(p.Mapping) > 0 {
		m := gMapping{Type: "value", Options: map[string]gMappingText{}}
		for i, v := range slices.Sorted(maps.Keys(p.Mapping)) {
			m.Options[v] = gMappingText{Text: p.Mapping[v], Index: i}
		}
		g.FieldConfig.Defaults.Mappings = []gMapping{m}
	}
	g.Options, g.Transformations = options(p.Type)
	return g
}

// options are each panel type's display options.
func options(typ string) (map[string]any, []any) {
	switch typ {
	case "stat":
		return map[string]any{"reduceOptions": map[string]any{"calcs": []string{"lastNotNull"}}, "colorMode": "background"}, nil
	case "state-timeline":
		return map[string]any{"showValue": "never", "mergeValues": true}, nil
	case "table":
		hide := map[string]bool{"Time": true, "Value": true, "__name__": true}
		return map[string]any{"showHeader": true}, []any{map[string]any{"id": "organize", "options": map[string]any{"excludeByName": hide}}}
	}
	return map[string]any{"legend": map[string]any{"displayMode": "list", "placement": "bottom"}, "tooltip": map[string]any{"mode": "multi"}}, nil
}
