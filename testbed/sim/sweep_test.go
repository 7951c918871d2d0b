package sim

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// TestSweep refits the calibrated parameters: SIM_SWEEP=1 go test -run
// TestSweep -v ./testbed/sim prints each combination's error on every
// current real row (minutes; skipped otherwise).
func TestSweep(t *testing.T) {
	if os.Getenv("SIM_SWEEP") == "" {
		t.Skip("SIM_SWEEP not set: the calibration sweep takes minutes")
	}
	var rows []RealRow
	for _, r := range RealRows {
		if r.Current {
			rows = append(rows, r)
		}
	}
	for _, lat := range []float64{0.0025, 0.005, 0.01, 0.02} {
		for _, q := range []int{0, 1, 2} { // 0: requests_per_peer's rule
			for _, w := range []float64{0.02, 0.03, 0.04} {
				cs, err := Calibrate(context.Background(), Config{RequestLatency: lat, QueueDepth: q, Waste: w}, rows, 2)
				if err != nil {
					t.Fatal(err)
				}
				line := fmt.Sprintf("lat %.4f q %d waste %.3f:", lat, q, w)
				var maxErr, sq float64
				for _, c := range cs {
					line += fmt.Sprintf(" %+.3f", c.Diff)
					maxErr = max(maxErr, abs(c.Diff))
					sq += c.Diff * c.Diff
				}
				t.Logf("%s maxerr %.3f rms %.3f", line, maxErr, sq)
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
