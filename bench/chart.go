package main

import (
	"bytes"
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// builderColor gives each builder the same color in every panel.
func builderColor(i int) color.Color {
	palette := []color.Color{
		color.RGBA{R: 0xd9, G: 0x5f, B: 0x02, A: 0xff}, // kiln: orange
		color.RGBA{R: 0x1b, G: 0x6f, B: 0xb5, A: 0xff}, // blue
		color.RGBA{R: 0x4d, G: 0xa0, B: 0x4d, A: 0xff}, // green
		color.RGBA{R: 0x7f, G: 0x5f, B: 0xb0, A: 0xff},
	}
	return palette[i%len(palette)]
}

// renderChart draws results.png: one row of panels per workload (wall time,
// peak RSS, store disk use), one bar per builder at the median with a
// min–max whisker, each panel on its own linear scale. It returns nil when
// there is nothing to draw.
func renderChart(r *results) ([]byte, error) {
	g := groupMeasurements(r.Measurements)
	if len(g.workloads) == 0 {
		return nil, nil
	}
	metrics := []metric{wallMetric(), rssMetric(), diskMetric()}
	short := []string{"wall time (s)", "peak RSS (MiB)", "store disk use (MiB)"}
	panelW, panelH := vg.Points(300), vg.Points(190)
	img := vgimg.NewWith(vgimg.UseWH(panelW*vg.Length(len(metrics)), panelH*vg.Length(len(g.workloads))), vgimg.UseDPI(96))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(g.workloads), Cols: len(metrics), PadX: 8, PadY: 8, PadTop: 4, PadBottom: 4, PadLeft: 4, PadRight: 4}
	for row, w := range g.workloads {
		for col, mt := range metrics {
			p, err := panel(fmt.Sprintf("%s: %s", w, short[col]), g.cells[w], r.Meta.Builders, mt)
			if err != nil {
				return nil, fmt.Errorf("drawing the %s chart of %s: %w", short[col], w, err)
			}
			p.Draw(tiles.At(dc, col, row))
		}
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("encoding results.png: %w", err)
	}
	return buf.Bytes(), nil
}

// panel is one bar chart: metric mt of one workload, a bar per builder.
func panel(title string, cells map[string][]measurement, builders []string, mt metric) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(11)
	p.X.Tick.Label.Font.Size = vg.Points(9)
	p.Y.Tick.Label.Font.Size = vg.Points(8)
	p.NominalX(builders...)
	top := 0.0
	var whiskers struct {
		plotter.XYs
		plotter.YErrors
	}
	var labels plotter.XYLabels
	for i, bn := range builders {
		var xs []float64
		failed := 0
		for _, m := range cells[bn] {
			if m.Error != "" {
				failed++
			} else if v, ok := mt.value(m); ok {
				xs = append(xs, v)
			}
		}
		s, ok := summarize(xs)
		if !ok {
			text := "n/a"
			if len(cells[bn]) == 0 {
				text = "—"
			} else if failed == len(cells[bn]) {
				text = "failed"
			}
			labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: 0})
			labels.Labels = append(labels.Labels, text)
			continue
		}
		bars, err := plotter.NewBarChart(plotter.Values{s.Median}, vg.Points(36))
		if err != nil {
			return nil, err
		}
		bars.XMin = float64(i)
		bars.Color = builderColor(i)
		bars.LineStyle.Width = 0
		p.Add(bars)
		whiskers.XYs = append(whiskers.XYs, plotter.XY{X: float64(i), Y: s.Median})
		whiskers.YErrors = append(whiskers.YErrors, struct{ Low, High float64 }{s.Median - s.Min, s.Max - s.Median})
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: s.Max})
		labels.Labels = append(labels.Labels, mt.format(s.Median))
		if s.Max > top {
			top = s.Max
		}
	}
	if len(whiskers.XYs) > 0 {
		eb, err := plotter.NewYErrorBars(whiskers)
		if err != nil {
			return nil, err
		}
		p.Add(eb)
	}
	if len(labels.XYs) > 0 {
		l, err := plotter.NewLabels(labels)
		if err != nil {
			return nil, err
		}
		for i := range l.TextStyle {
			l.TextStyle[i].Font.Size = vg.Points(9)
			l.TextStyle[i].XAlign = draw.XCenter
		}
		l.Offset = vg.Point{Y: vg.Points(3)}
		p.Add(l)
	}
	if top == 0 {
		top = 1
	}
	p.Y.Min, p.Y.Max = 0, top*1.2
	p.X.Min, p.X.Max = -0.6, float64(len(builders))-0.4
	return p, nil
}
