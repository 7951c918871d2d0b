package sim

import (
	"context"
	"testing"
	"time"
)

func TestQuick(t *testing.T) {
	for _, c := range []Config{
		{Agents: 8, BlobBytes: 256 << 20, Rate: 25e6},
		{Agents: 16, BlobBytes: 256 << 20, Rate: 12.5e6},
		{Agents: 32, BlobBytes: 256 << 20, Rate: 6.25e6},
		{Agents: 16, BlobBytes: 1 << 30, Rate: 12.5e6},
		{Agents: 8, BlobBytes: 256 << 20, Rate: 25e6, Warm: true},
		{Agents: 16, BlobBytes: 256 << 20, Rate: 12.5e6, Warm: true},
		{Agents: 32, BlobBytes: 256 << 20, Rate: 6.25e6, Warm: true},
	} {
		t0 := time.Now()
		r, err := Run(context.Background(), c.Calibrated())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("N=%d warm=%v p50 %.3f max %.3f ttfb %.2f origin %.3f F conns %.1f events %d wall %v", c.Agents, c.Warm, r.P50OverTMin, r.MaxOverTMin, r.TTFBSecondsP50, r.OriginSentOverF, r.ConnsPerAgent, r.Events, time.Since(t0))
	}
}
