package sim

import (
	"context"
	"os"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"
)

func TestScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SIM_N"))
	if n == 0 {
		t.Skip()
	}
	if p := os.Getenv("SIM_PROF"); p != "" {
		f, _ := os.Create(p)
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	t0 := time.Now()
	r, err := Run(context.Background(), Config{Agents: n, BlobBytes: 256 << 20, Rate: 12.5e6}.Calibrated())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("N=%d p50 %.3f max %.3f ttfb %.2f origin %.3f F conns %.1f events %d wall %v", n, r.P50OverTMin, r.MaxOverTMin, r.TTFBSecondsP50, r.OriginSentOverF, r.ConnsPerAgent, r.Events, time.Since(t0))
}
