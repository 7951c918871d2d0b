package bench

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"
)

func count(xs []bool) (n int) {
	for _, x := range xs {
		if x {
			n++
		}
	}
	return n
}

func TestScenarioPicksDisjointSets(t *testing.T) {
	for _, n := range []int{4, 8, 16, 64, 256} {
		s := newScenario(SwarmOptions{Agents: n, SlowFraction: 0.25, LateFraction: 0.25, ChurnFraction: 0.1})
		if got, want := count(s.slow), n/4; got != want {
			t.Errorf("n=%d: %d slow, want %d", n, got, want)
		}
		if got, want := count(s.late), n/4; got != want {
			t.Errorf("n=%d: %d late, want %d", n, got, want)
		}
		wantChurn := int(0.1*float64(n) + 0.5)
		if got := count(s.churn); got != wantChurn {
			t.Errorf("n=%d: %d churned, want %d", n, got, wantChurn)
		}
		for i := range n {
			if s.late[i] && s.churn[i] {
				t.Errorf("n=%d: agent %d both late and churned", n, i)
			}
			if s.slow[i] && s.churn[i] {
				t.Errorf("n=%d: agent %d both slow and churned (fast ones were left)", n, i)
			}
		}
	}
	if err := (SwarmOptions{LateFraction: 0.6, ChurnFraction: 0.5}).validateScenario(); err == nil {
		t.Error("late + churn >= 1 accepted")
	}
	if err := (SwarmOptions{SlowFraction: 1}).validateScenario(); err == nil {
		t.Error("slow fraction 1 accepted")
	}
	for _, o := range []SwarmOptions{{SlowConns: 3}, {SlowFraction: 0.25, SlowConns: -1}} {
		if err := o.validateScenario(); err == nil {
			t.Errorf("slow conns %d with slow fraction %g accepted", o.SlowConns, o.SlowFraction)
		}
	}
	o := SwarmOptions{Agents: 8, SlowFraction: 0.25, SlowConns: 3}
	s := newScenario(o)
	for i := range o.Agents {
		want := 0
		if s.slow[i] {
			want = 3
		}
		if got := o.agentConns(s, i); got != want {
			t.Errorf("agent %d (slow %v): conns %d, want %d", i, s.slow[i], got, want)
		}
	}
	if o.ConnsPerTorrent = 8; o.agentConns(s, slices.Index(s.slow, false)) != 8 {
		t.Error("--conns not given to the fast agents")
	}
}

// TestSwarmScenarioRun runs a small swarm with a slow agent, a late joiner
// and a churned agent: every timed pull verifies, the killed agent's pull is
// not counted, its replacement pulls from scratch, and each bound follows
// the client's own link and start.
func TestSwarmScenarioRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	o := SwarmOptions{Agents: 8, Size: 8 << 20, PieceSize: 256 << 10, Rate: 8e6,
		SlowFraction: 0.125, SlowDivisor: 2, LateFraction: 0.125, ChurnFraction: 0.125, ConnsPerTorrent: 4, Dir: t.TempDir()}
	r, err := Swarm(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !r.AllVerified || len(r.Failures) > 0 {
		t.Fatalf("failures: %v", r.Failures)
	}
	if r.ConnsPerTorrent != 4 {
		t.Errorf("conns_per_torrent %d in the result, want 4", r.ConnsPerTorrent)
	}
	kinds := map[string]int{}
	for _, c := range r.Clients {
		kinds[c.Kind]++
		f := float64(o.Size)
		switch c.Kind {
		case KindKilled:
			if c.OverBound != 0 {
				t.Errorf("killed client timed: %+v", c)
			}
			continue
		case KindLate, KindReplacement:
			if c.StartSeconds <= 0 {
				t.Errorf("%s client started with the swarm: %+v", c.Kind, c)
			}
		}
		if c.BoundSeconds < f/float64(c.RateBps)-1e-9 {
			t.Errorf("bound %.2fs below the client's own link (%.2fs): %+v", c.BoundSeconds, f/float64(c.RateBps), c)
		}
		// Nothing beats its own link (allow the token bucket's burst).
		if c.Seconds < 0.8*f/float64(c.RateBps) {
			t.Errorf("client faster than its link: %+v", c)
		}
	}
	if kinds[KindOnTime] != 6 || kinds[KindLate] != 1 || kinds[KindKilled] != 1 || kinds[KindReplacement] != 1 {
		t.Errorf("clients by kind %v, want 6 on-time, 1 late, 1 killed, 1 replacement", kinds)
	}
	svg := SVG(&Results{Swarm: []*SwarmResult{r}})
	if ticks := strings.Count(svg, `stroke="#c0392b" stroke-width="2"`); ticks == 0 || !strings.Contains(svg, "over own bound p50") {
		t.Errorf("plot lacks the per-client bounds (%d ticks):\n%s", ticks, svg)
	}
	if len(r.AgentSeconds) != 8 || r.P50OverBound <= 0 || r.MaxOverBound < r.P50OverBound {
		t.Errorf("aggregates: %d times, p50 %.2f, max %.2f", len(r.AgentSeconds), r.P50OverBound, r.MaxOverBound)
	}
}
