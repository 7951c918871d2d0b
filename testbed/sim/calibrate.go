package sim

import (
	"context"
	"fmt"
)

// RealRow is a measured `shoal bench swarm` row the model is checked
// against (one origin, U = R unless OriginRate is set).
type RealRow struct {
	Name       string
	Agents     int
	BlobBytes  int64
	Rate       float64
	OriginRate float64 // 0: Rate
	Warm       bool
	P50, Max   float64 // measured, over T_min
	// Current is false for rows measured before the code's recent changes
	// (issue 14's table): reported, but not held to the +-0.05 band.
	Current bool
	Source  string
}

// RealRows are every real row available: bench/results.json and
// docs/benchmarks.md (N = 8, 16, 32, current code) and the older rows of
// issue 14's table (N = 16, 64, 128).
var RealRows = []RealRow{
	{"N=8 256MiB 25MB/s cold", 8, 256 << 20, 25e6, 0, false, 1.053, 1.053, true, "bench/results.json 2026-11-24"},
	{"N=16 256MiB 12.5MB/s cold", 16, 256 << 20, 12.5e6, 0, false, 1.090, 1.172, true, "bench/results.json 2026-11-24"},
	{"N=32 256MiB 6.25MB/s cold", 32, 256 << 20, 6.25e6, 0, false, 1.101, 1.111, true, "bench/results.json 2026-11-24"},
	{"N=16 1GiB 12.5MB/s cold", 16, 1 << 30, 12.5e6, 0, false, 1.092, 1.097, true, "bench/results.json 2026-11-24"},
	{"N=8 256MiB 25MB/s warm", 8, 256 << 20, 25e6, 0, true, 1.04, 1.09, true, "docs/benchmarks.md warm table"},
	{"N=16 256MiB 12.5MB/s warm", 16, 256 << 20, 12.5e6, 0, true, 1.06, 1.07, true, "docs/benchmarks.md warm table"},
	{"N=32 256MiB 6.25MB/s warm", 32, 256 << 20, 6.25e6, 0, true, 1.10, 1.12, true, "docs/benchmarks.md warm table"},
	{"N=8 256MiB 25MB/s cold (2026-12-02)", 8, 256 << 20, 25e6, 0, false, 1.048, 1.050, true, "docs/benchmarks.md, after the architecture step"},
	{"N=16 256MiB 12.5MB/s cold (2026-12-02)", 16, 256 << 20, 12.5e6, 0, false, 1.065, 1.085, true, "docs/benchmarks.md, after the architecture step (mean of 2)"},
	{"N=32 256MiB 6.25MB/s cold (2026-12-02)", 32, 256 << 20, 6.25e6, 0, false, 1.081, 1.093, true, "docs/benchmarks.md, after the architecture step"},
	{"N=16 256MiB 12.5MB/s cold (issue 14)", 16, 256 << 20, 12.5e6, 0, false, 1.06, 1.08, false, "issue 14 table, older code"},
	{"N=64 64MiB 3.125MB/s cold (issue 14)", 64, 64 << 20, 3.125e6, 0, false, 1.43, 1.45, false, "issue 14 table, older code"},
	{"N=64 16MiB 1MB/s cold (issue 14)", 64, 16 << 20, 1e6, 0, false, 1.41, 1.45, false, "issue 14 table, older code"},
	{"N=128 64MiB 1.5625MB/s cold (issue 14)", 128, 64 << 20, 1.5625e6, 0, false, 1.63, 1.72, false, "issue 14 table, older code"},
	{"N=128 16MiB 0.5MB/s cold (issue 14)", 128, 16 << 20, 0.5e6, 0, false, 1.46, 1.50, false, "issue 14 table, older code"},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s cold (issue 14)", 128, 16 << 20, 0.5e6, 5e6, false, 1.31, 1.46, false, "issue 14 table, older code"},
}

// Calibration is one real row against the model.
type Calibration struct {
	Row            RealRow `json:"row"`
	SimP50, SimMax float64 // mean over the seeds
	Diff           float64 // SimP50 - Row.P50
}

// Calibrate runs every real row with the policies of base (its Agents,
// BlobBytes and rates are replaced by the row's), averaging seeds runs.
func Calibrate(ctx context.Context, base Config, rows []RealRow, seeds int) ([]Calibration, error) {
	out := make([]Calibration, 0, len(rows))
	for _, r := range rows {
		c := base
		c.Agents, c.BlobBytes, c.Rate, c.OriginRate, c.UpstreamRate, c.Warm = r.Agents, r.BlobBytes, r.Rate, r.OriginRate, 0, r.Warm
		c.PieceBytes = 0
		var p50, mx float64
		for k := range seeds {
			c.Seed = base.Seed + uint64(k)
			res, err := Run(ctx, c)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", r.Name, err)
			}
			p50 += res.P50OverTMin
			mx += res.MaxOverTMin
		}
		p50, mx = p50/float64(seeds), mx/float64(seeds)
		out = append(out, Calibration{Row: r, SimP50: p50, SimMax: mx, Diff: p50 - r.P50})
	}
	return out, nil
}
