package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/cluster"
)

// Client kinds in a swarm run.
const (
	KindOnTime      = "on-time"     // starts with the swarm
	KindLate        = "late"        // starts when the on-time agents are half done
	KindKilled      = "killed"      // its agent is killed mid-pull (not timed)
	KindReplacement = "replacement" // a fresh agent in a killed one's place
)

// ClientResult is one client's pull in a swarm run. Its bound is what its
// own link and start allow: max(F/d, F/U_origins, the upstream's remaining
// upload when cold) for an on-time agent; max(F/d, the upstream's
// remaining upload) for one that starts later (the swarm already holds what
// the origins sent).
type ClientResult struct {
	Agent        int     `json:"agent"`
	Kind         string  `json:"kind"`
	RateBps      int64   `json:"rate_bytes_per_second"`
	StartSeconds float64 `json:"start_seconds"` // after the on-time agents started
	Seconds      float64 `json:"seconds"`       // from its own start
	TTFBSeconds  float64 `json:"ttfb_seconds"`
	BoundSeconds float64 `json:"bound_seconds"`
	OverBound    float64 `json:"over_bound"`
	Error        string  `json:"error,omitempty"`
}

// scenario says which agents are slow, late or churned: each is a fraction
// spread over the indexes (agent i is picked when (i+1)*f crosses an
// integer), late agents from the end and churned ones among the on-time
// agents, so the three sets do not collide while they fit.
type scenario struct {
	slow, late, churn []bool
}

func spread(n int, f float64, offset int) []bool {
	out := make([]bool, n)
	if f <= 0 {
		return out
	}
	for i := range n {
		j := (i + offset) % n
		if math.Floor(float64(i+1)*f+1e-9) > math.Floor(float64(i)*f+1e-9) {
			out[j] = true
		}
	}
	return out
}

func newScenario(o SwarmOptions) scenario {
	n := o.Agents
	s := scenario{slow: spread(n, o.SlowFraction, 0), late: make([]bool, n), churn: make([]bool, n)}
	// Late agents: the last ones; churned: spread over the rest, skipping
	// slow agents where possible (the scenarios are meant to be separable).
	k := int(math.Round(o.LateFraction * float64(n)))
	for i := n - k; i < n; i++ {
		s.late[i] = true
	}
	want := int(math.Round(o.ChurnFraction * float64(n)))
	var fast, slow []int // on-time agents
	for i := range n - k {
		if s.slow[i] {
			slow = append(slow, i)
		} else {
			fast = append(fast, i)
		}
	}
	pick := func(from []int, m int) {
		for j := range min(m, len(from)) {
			s.churn[from[(2*j+1)*len(from)/(2*m)]] = true
		}
	}
	pick(fast, want)
	pick(slow, want-len(fast))
	return s
}

func (o SwarmOptions) validateScenario() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"slow fraction", o.SlowFraction}, {"late fraction", o.LateFraction}, {"churn fraction", o.ChurnFraction}} {
		if f.v < 0 || f.v >= 1 {
			return fmt.Errorf("bench: %s: want 0 <= f < 1, got %g", f.name, f.v)
		}
	}
	if o.SlowFraction > 0 && o.SlowDivisor < 1 {
		return fmt.Errorf("bench: slow divisor: want >= 1, got %g", o.SlowDivisor)
	}
	if o.SlowConns < 0 || o.SlowConns > 0 && o.SlowFraction == 0 {
		return fmt.Errorf("bench: slow agents' connections: want >= 1 with a slow fraction, got %d", o.SlowConns)
	}
	if o.LateFraction+o.ChurnFraction >= 1 {
		return errors.New("bench: late and churn fractions leave no on-time agent")
	}
	return nil
}

// agentConns is agent i's conns_per_torrent, 0 for the default (slow
// agents get SlowConns if set, every agent ConnsPerTorrent if set).
func (o SwarmOptions) agentConns(s scenario, i int) int {
	if o.SlowConns > 0 && s.slow[i] {
		return o.SlowConns
	}
	return o.ConnsPerTorrent
}

// agentRate is agent i's cap (slow agents get Rate / SlowDivisor).
func (o SwarmOptions) agentRate(s scenario, i int) config.Rate {
	if s.slow[i] {
		return config.Rate(float64(o.Rate) / o.SlowDivisor)
	}
	return o.Rate
}

// pullFunc pulls url, checks the body against want, and says how long the
// pull took and how long until its first byte; rate > 0 caps it.
type pullFunc func(ctx context.Context, url string, want copyCheck, rate config.Rate) (secs, ttfb float64, err error)

// runClients pulls the blob through every agent: on-time agents at once;
// once they hold half their bytes in all, late agents start and churned
// agents are killed (their pulls cancelled) and replaced by fresh agents
// that pull from scratch.
func runClients(ctx context.Context, c *cluster.Cluster, o SwarmOptions, s scenario, repo string, d digest.Digest, want copyCheck, pull pullFunc) []ClientResult {
	n := len(c.Agents)
	res := make([]ClientResult, n, n+n)
	onTime := 0
	for i := range n {
		res[i] = ClientResult{Agent: i, Kind: KindOnTime, RateBps: int64(o.agentRate(s, i))}
		if s.late[i] {
			res[i].Kind = KindLate
		} else {
			onTime++
		}
	}
	f := float64(o.Size)
	upstreamEnd := 0.0
	if !o.WarmOrigins {
		upstreamEnd = f / float64(o.UpstreamRate)
	}
	bound := func(i int, start float64, first bool) float64 {
		b := max(f/float64(o.agentRate(s, i)), upstreamEnd-start)
		if first {
			b = max(b, f/float64(o.OriginRate))
		}
		return b
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	t0 := time.Now()
	cancels := make([]context.CancelFunc, n)
	start := func(slot, agent int, url string) {
		pctx, cancel := context.WithCancel(ctx)
		if slot < n {
			cancels[slot] = cancel
		}
		startAt := time.Since(t0).Seconds()
		wg.Go(func() {
			defer cancel()
			secs, ttfb, err := pull(pctx, url, want, 0)
			mu.Lock()
			defer mu.Unlock()
			r := &res[slot]
			r.StartSeconds, r.Seconds, r.TTFBSeconds = startAt, secs, ttfb
			if err != nil && r.Kind != KindKilled {
				r.Error = err.Error()
			}
		})
	}
	urlOf := func(i int) string { return proto.V2BlobURL(c.Agents[i].URL(), repo, d) }
	urls := make([]string, n)
	for i := range n {
		urls[i] = urlOf(i)
	}
	for i := range n {
		if !s.late[i] {
			start(i, i, urls[i])
		}
	}
	if anyTrue(s.late) || anyTrue(s.churn) {
		// Half done: what the on-time agents' swarms hold, not what their
		// clients have read (in-order delivery may lag the swarm).
		half := int64(onTime) * int64(o.Size) / 2
		held := func() (b int64) {
			for i := range n {
				if !s.late[i] {
					b += c.Agents[i].Node().BytesFromOrigins() + c.Agents[i].Node().BytesFromPeers()
				}
			}
			return b
		}
		for held() < half && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
		for i := range n {
			if !s.churn[i] {
				continue
			}
			mu.Lock()
			res[i].Kind = KindKilled
			mu.Unlock()
			cancels[i]()
			if _, err := c.ReplaceAgent(i); err != nil {
				mu.Lock()
				res = append(res, ClientResult{Agent: i, Kind: KindReplacement, Error: err.Error()})
				mu.Unlock()
				continue
			}
			mu.Lock()
			res = append(res, ClientResult{Agent: i, Kind: KindReplacement, RateBps: int64(o.agentRate(s, i))})
			slot := len(res) - 1
			mu.Unlock()
			start(slot, i, urlOf(i))
		}
		for i := range n {
			if s.late[i] {
				start(i, i, urls[i])
			}
		}
	}
	wg.Wait()
	for i := range res {
		r := &res[i]
		r.BoundSeconds = bound(r.Agent, r.StartSeconds, r.Kind == KindOnTime)
		if r.Kind != KindKilled && r.BoundSeconds > 0 {
			r.OverBound = r.Seconds / r.BoundSeconds
		}
	}
	return res
}

func anyTrue(xs []bool) bool {
	for _, x := range xs {
		if x {
			return true
		}
	}
	return false
}
