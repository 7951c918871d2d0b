package sim

import (
	"context"
	"fmt"
	"os"
	"testing"
)

func TestSweep(t *testing.T) {
	if os.Getenv("SIM_SWEEP") == "" {
		t.Skip()
	}
	rows := []struct {
		c    Config
		real float64
	}{
		{Config{Agents: 8, BlobBytes: 256 << 20, Rate: 25e6}, 1.053},
		{Config{Agents: 16, BlobBytes: 256 << 20, Rate: 12.5e6}, 1.078},
		{Config{Agents: 32, BlobBytes: 256 << 20, Rate: 6.25e6}, 1.09},
		{Config{Agents: 16, BlobBytes: 1 << 30, Rate: 12.5e6}, 1.092},
		{Config{Agents: 8, BlobBytes: 256 << 20, Rate: 25e6, Warm: true}, 1.04},
		{Config{Agents: 16, BlobBytes: 256 << 20, Rate: 12.5e6, Warm: true}, 1.06},
		{Config{Agents: 32, BlobBytes: 256 << 20, Rate: 6.25e6, Warm: true}, 1.10},
	}
	for _, lat := range []float64{0.001, 0.005, 0.01, 0.02} {
		for _, q := range []int{1, 2, 3, 4} {
			for _, w := range []float64{0.0, 0.02} {
				line := fmt.Sprintf("lat %.3f q %d waste %.2f:", lat, q, w)
				var maxErr float64
				for _, r := range rows {
					var sum float64
					for seed := range uint64(3) {
						c := r.c
						c.RequestLatency, c.QueueDepth, c.Waste, c.Seed = lat, q, w, seed+1
						c = c.Calibrated()
						res, err := Run(context.Background(), c)
						if err != nil {
							t.Fatal(err)
						}
						sum += res.P50OverTMin
					}
					p := sum / 3
					line += fmt.Sprintf(" %.3f", p)
					maxErr = max(maxErr, abs(p-r.real))
				}
				t.Logf("%s maxerr %.3f", line, maxErr)
			}
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
