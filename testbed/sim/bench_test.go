package sim

import (
	"context"
	"os"
	"strconv"
	"testing"
)

// BenchmarkRun is the prediction row of docs/benchmarks.md (16 MiB, R so
// that N * R = 64 MB/s, U = R, cold) at N = 1,000, or SIM_BENCH_AGENTS:
//
//	go test -run - -bench Run -benchtime 1x -cpuprofile cpu.out ./testbed/sim
func BenchmarkRun(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("SIM_BENCH_AGENTS")); err == nil && v > 0 {
		n = v
	}
	c := Config{Agents: n, BlobBytes: 16 << 20, Rate: 64e6 / float64(n), Seed: 1}.Calibrated()
	for b.Loop() {
		r, err := Run(context.Background(), c)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(r.Events), "events")
		b.ReportMetric(r.P50OverTMin, "p50/tmin")
	}
}
