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
	PieceBytes int64 // as measured (the origin's rule of the day, or --piece-size)
	Rate       float64
	OriginRate float64 // 0: Rate
	Warm       bool
	P50, Max   float64 // measured, over T_min
	// Code is the agents' request window when the row was measured:
	// "requests_per_peer" (the current rule: 20 ms of the download cap,
	// at least one 64 KiB block) or "library" (anacrolix's own, ramping
	// to 250+ blocks per peer; duplicate blocks 5 % at N = 64-128). The
	// model simulates every row with the current rule.
	Code string
	// Current rows are held to +-0.05 (the guard test and the table);
	// the others are reported only: older code, or a CPU-bound run.
	Current bool
	Source  string
}

const (
	codeRPP = "requests_per_peer"
	codeLib = "library"
)

// RealRows are every real row available: bench/results.json and
// docs/benchmarks.md (N = 8, 16, 32), bench/scale and the lead's runs of
// 2026-12-02 (N = 32, 64, 128 at 256, 64 and 32 KiB pieces, and with
// requests_per_peer), and the older rows of issue 14's table.
var RealRows = []RealRow{
	{"N=128 16MiB 0.5MB/s 32KiB", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.099, 1.114, codeRPP, true, "2026-12-02, commit 16c4fca (requests_per_peer)"},
	{"N=64 16MiB 1MB/s 32KiB", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.092, 1.099, codeRPP, true, "2026-12-02, commit 16c4fca (requests_per_peer)"},
	{"N=32 64MiB 6.25MB/s 128KiB", 32, 64 << 20, 128 << 10, 6.25e6, 0, false, 1.091, 1.111, codeRPP, true, "2026-12-02, commit 16c4fca (CPU-bound: 1.78 cores)"},

	{"N=128 16MiB 0.5MB/s 32KiB", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.126, 1.145, codeLib, true, "2026-12-02, commit f5542e3 (32 KiB pieces)"},
	{"N=64 16MiB 1MB/s 32KiB", 64, 16 << 20, 32 << 10, 1e6, 0, false, 1.112, 1.120, codeLib, true, "2026-12-02, commit f5542e3 (32 KiB pieces)"},
	{"N=128 16MiB 0.5MB/s 32KiB (--piece-size)", 128, 16 << 20, 32 << 10, 0.5e6, 0, false, 1.135, 1.147, codeLib, true, "2026-12-02 before f5542e3, mean of 3 runs (1.121, 1.133, 1.152)"},
	{"N=128 16MiB 0.5MB/s 64KiB", 128, 16 << 20, 64 << 10, 0.5e6, 0, false, 1.197, 1.214, codeLib, true, "2026-12-02 before f5542e3 (--piece-size)"},
	{"N=128 16MiB 0.5MB/s 256KiB", 128, 16 << 20, 256 << 10, 0.5e6, 0, false, 1.474, 1.514, codeLib, true, "bench/scale/n128-f16MiB-r0.5MBps.json"},
	{"N=64 16MiB 1MB/s 256KiB", 64, 16 << 20, 256 << 10, 1e6, 0, false, 1.414, 1.466, codeLib, true, "bench/scale/n64-f16MiB-r1MBps.json"},
	{"N=32 64MiB 6.25MB/s 256KiB", 32, 64 << 20, 256 << 10, 6.25e6, 0, false, 1.162, 1.177, codeLib, true, "bench/scale/n32-f64MiB-r6.25MBps.json"},
	{"N=128 16MiB 0.5MB/s 16KiB", 128, 16 << 20, 16 << 10, 0.5e6, 0, false, 1.141, 1.176, codeLib, false, "2026-12-02 (--piece-size; CPU-bound: 1.92 cores)"},

	{"N=8 256MiB 25MB/s cold", 8, 256 << 20, 512 << 10, 25e6, 0, false, 1.053, 1.053, codeLib, true, "bench/results.json 2026-11-24"},
	{"N=16 256MiB 12.5MB/s cold", 16, 256 << 20, 512 << 10, 12.5e6, 0, false, 1.090, 1.172, codeLib, true, "bench/results.json 2026-11-24"},
	{"N=32 256MiB 6.25MB/s cold", 32, 256 << 20, 512 << 10, 6.25e6, 0, false, 1.101, 1.111, codeLib, true, "bench/results.json 2026-11-24"},
	{"N=16 1GiB 12.5MB/s cold", 16, 1 << 30, 2 << 20, 12.5e6, 0, false, 1.092, 1.097, codeLib, true, "bench/results.json 2026-11-24"},
	{"N=8 256MiB 25MB/s warm", 8, 256 << 20, 512 << 10, 25e6, 0, true, 1.04, 1.09, codeLib, true, "docs/benchmarks.md warm table"},
	{"N=16 256MiB 12.5MB/s warm", 16, 256 << 20, 512 << 10, 12.5e6, 0, true, 1.06, 1.07, codeLib, true, "docs/benchmarks.md warm table"},
	{"N=32 256MiB 6.25MB/s warm", 32, 256 << 20, 512 << 10, 6.25e6, 0, true, 1.10, 1.12, codeLib, true, "docs/benchmarks.md warm table"},
	{"N=8 256MiB 25MB/s cold (2026-12-02)", 8, 256 << 20, 512 << 10, 25e6, 0, false, 1.048, 1.050, codeLib, true, "docs/benchmarks.md, after the architecture step"},
	{"N=16 256MiB 12.5MB/s cold (2026-12-02)", 16, 256 << 20, 512 << 10, 12.5e6, 0, false, 1.065, 1.085, codeLib, true, "docs/benchmarks.md, after the architecture step (mean of 2)"},
	{"N=32 256MiB 6.25MB/s cold (2026-12-02)", 32, 256 << 20, 512 << 10, 6.25e6, 0, false, 1.081, 1.093, codeLib, true, "docs/benchmarks.md, after the architecture step"},

	{"N=64 64MiB 3.125MB/s 256KiB (issue 14)", 64, 64 << 20, 256 << 10, 3.125e6, 0, false, 1.43, 1.45, codeLib, false, "issue 14 table, older code"},
	{"N=128 64MiB 1.5625MB/s 256KiB (issue 14)", 128, 64 << 20, 256 << 10, 1.5625e6, 0, false, 1.63, 1.72, codeLib, false, "issue 14 table, older code"},
	{"N=128 16MiB 0.5MB/s, origin 5MB/s 256KiB (issue 14)", 128, 16 << 20, 256 << 10, 0.5e6, 5e6, false, 1.31, 1.46, codeLib, false, "issue 14 table, older code"},
}

// Calibration is one real row against the model.
type Calibration struct {
	Row            RealRow `json:"row"`
	SimP50, SimMax float64 // mean over the seeds
	Diff           float64 // SimP50 - Row.P50
}

// Calibrate runs every real row with the policies of base (its Agents,
// BlobBytes, PieceBytes and rates are replaced by the row's), averaging
// seeds runs.
func Calibrate(ctx context.Context, base Config, rows []RealRow, seeds int) ([]Calibration, error) {
	out := make([]Calibration, 0, len(rows))
	for _, r := range rows {
		c := base
		c.Agents, c.BlobBytes, c.Rate, c.OriginRate, c.UpstreamRate, c.Warm = r.Agents, r.BlobBytes, r.Rate, r.OriginRate, 0, r.Warm
		c.PieceBytes = r.PieceBytes
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
