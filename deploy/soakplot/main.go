// Command soakplot draws a chaos soak's report (make soak's report.json,
// docs/reliability.md) as a PNG: requests per second that succeeded and
// that failed, over time, with each fault window shaded by kind.
//
//	go run ./soakplot -report report.json -out soak.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// report is the part of the soak's report the plot reads (internal/soak.Report).
type report struct {
	Seed     int64   `json:"seed"`
	Duration float64 `json:"durationSeconds"`
	Windows  []struct {
		Kind  string  `json:"kind"`
		Start float64 `json:"start"`
		End   float64 `json:"end"`
	} `json:"windows"`
	Timeline []struct {
		T      float64 `json:"t"`
		OK     int     `json:"ok"`
		Failed int     `json:"failed"`
	} `json:"timeline"`
}

// bucket is the report's timeline resolution, in seconds.
const bucket = 10

// Each kind's shade; the custodian kinds in greys, the rest in colours.
var shades = map[string]color.NRGBA{
	"custodian-stop":    {R: 160, G: 160, B: 160, A: 40},
	"custodian-kill":    {R: 110, G: 110, B: 110, A: 45},
	"quorum-lost":       {R: 220, G: 40, B: 40, A: 60},
	"plugin-kill":       {R: 240, G: 150, B: 30, A: 60},
	"apiserver-restart": {R: 150, G: 60, B: 200, A: 50},
	"rotate-sighup":     {R: 40, G: 140, B: 220, A: 50},
	"rotate-command":    {R: 40, G: 190, B: 190, A: 50},
	"migration":         {R: 60, G: 170, B: 60, A: 60},
}

var kindOrder = []string{"custodian-stop", "custodian-kill", "quorum-lost", "plugin-kill", "apiserver-restart", "rotate-sighup", "rotate-command", "migration"}

func main() {
	in := flag.String("report", "report.json", "the soak's JSON report")
	out := flag.String("out", "soak.png", "the PNG to write")
	flag.Parse()
	if err := run(*in, *out); err != nil {
		fmt.Fprintln(os.Stderr, "soakplot:", err)
		os.Exit(1)
	}
}

func run(in, out string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: not a soak report: %w", in, err)
	}
	p, err := render(r)
	if err != nil {
		return err
	}
	return p.Save(32*vg.Centimeter, 14*vg.Centimeter, out)
}

func render(r report) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Trousseau chaos soak, seed %d: requests over %.0f min, fault windows shaded", r.Seed, r.Duration/60)
	p.X.Label.Text = "minutes"
	p.Y.Label.Text = "requests/s (10 s buckets)"
	p.Legend.Top = true
	ok, failed := make(plotter.XYs, len(r.Timeline)), make(plotter.XYs, len(r.Timeline))
	top := 1.0
	for i, b := range r.Timeline {
		x := (b.T + bucket/2) / 60
		ok[i] = plotter.XY{X: x, Y: float64(b.OK) / bucket}
		failed[i] = plotter.XY{X: x, Y: float64(b.Failed) / bucket}
		top = max(top, ok[i].Y, failed[i].Y)
	}
	// Head room for the legend, top right.
	top *= 1.8
	if err := shadeWindows(p, r, top); err != nil {
		return nil, err
	}
	for _, s := range []struct {
		name string
		xys  plotter.XYs
		c    color.Color
	}{{"succeeded", ok, color.NRGBA{R: 30, G: 90, B: 200, A: 255}}, {"failed", failed, color.NRGBA{R: 210, G: 20, B: 20, A: 255}}} {
		l, err := plotter.NewLine(s.xys)
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = s.c, vg.Points(1.2)
		p.Add(l)
		p.Legend.Add(s.name, l)
	}
	p.Y.Min, p.Y.Max = 0, top
	return p, nil
}

// shadeWindows adds one translucent band per fault window, and one legend
// entry per kind that occurred.
func shadeWindows(p *plot.Plot, r report, height float64) error {
	seen := map[string]*plotter.Polygon{}
	for _, w := range r.Windows {
		band, err := plotter.NewPolygon(plotter.XYs{{X: w.Start / 60, Y: 0}, {X: w.End / 60, Y: 0}, {X: w.End / 60, Y: height}, {X: w.Start / 60, Y: height}})
		if err != nil {
			return err
		}
		band.Color, band.LineStyle.Width = shades[w.Kind], 0
		p.Add(band)
		seen[w.Kind] = band
	}
	for _, k := range kindOrder {
		if band := seen[k]; band != nil {
			p.Legend.Add(k, legendBox{shades[k]})
		}
	}
	return nil
}

// legendBox is a swatch of a kind's shade for the legend, darker than
// the band so that it reads on white.
type legendBox struct{ c color.NRGBA }

func (b legendBox) Thumbnail(c *draw.Canvas) {
	b.c.A = 140
	c.FillPolygon(b.c, c.ClipPolygonY([]vg.Point{
		{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y},
	}))
}
