package main

import (
	"image/color"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// drawPlot draws median throughput against file size, one line per method (random-file workloads).
func drawPlot(results []*result, file string) error {
	p := plot.New()
	p.Title.Text = "podcopy vs kubectl: throughput by file size (median)"
	p.X.Label.Text = "file size (MiB, log scale)"
	p.Y.Label.Text = "MB/s"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	byMethod := map[string]plotter.XYs{}
	var order []string
	for _, r := range results {
		if !strings.Contains(r.Workload, "random") || len(r.Samples) == 0 {
			continue
		}
		m := median(field(r, func(s sample) float64 { return s.Seconds }))
		if _, ok := byMethod[r.Method]; !ok {
			order = append(order, r.Method)
		}
		byMethod[r.Method] = append(byMethod[r.Method], plotter.XY{X: float64(r.Bytes) / (1 << 20), Y: float64(r.Bytes) / 1e6 / m})
	}
	if len(order) == 0 {
		return nil // no random-data workload in this run (-only): nothing to draw
	}
	for i, name := range order {
		line, points, err := plotter.NewLinePoints(byMethod[name])
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(name, line, points)
	}
	p.Add(plotter.NewGrid())
	p.BackgroundColor = color.White
	return p.Save(7*vg.Inch, 4.5*vg.Inch, file)
}
