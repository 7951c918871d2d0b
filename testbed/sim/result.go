package sim

import (
	"context"
	"slices"
)

// Result is one simulated run. The keys it shares with `shoal bench swarm
// --json` (bench.SwarmResult) mean the same; the agents measured are the
// ones that started with the run and were not killed, plus the churn
// replacements (whose times count from their own start).
type Result struct {
	Simulated        bool      `json:"simulated"`
	Agents           int       `json:"agents"`
	Origins          int       `json:"origins"`
	BlobBytes        int64     `json:"blob_bytes"`
	PieceBytes       int64     `json:"piece_bytes"`
	RateBps          int64     `json:"rate_bytes_per_second"`
	OriginRateBps    int64     `json:"origin_rate_bytes_per_second"`
	UpstreamRateBps  int64     `json:"upstream_rate_bytes_per_second"`
	WarmOrigins      bool      `json:"warm_origins"`
	TMinSeconds      float64   `json:"t_min_seconds"`
	AgentSecondsP50  float64   `json:"agent_seconds_p50"`
	AgentSecondsP90  float64   `json:"agent_seconds_p90"`
	AgentSecondsMax  float64   `json:"agent_seconds_max"`
	P50OverTMin      float64   `json:"p50_over_tmin"`
	MaxOverTMin      float64   `json:"max_over_tmin"`
	TTFBSecondsP50   float64   `json:"ttfb_seconds_p50"`
	AgentSeconds     []float64 `json:"agent_seconds,omitempty"`
	BytesFromOrigins int64     `json:"bytes_from_origins"`
	BytesFromPeers   int64     `json:"bytes_from_peers"`
	BytesWasted      int64     `json:"bytes_wasted"`
	OriginBytesSent  int64     `json:"origin_bytes_sent"`
	OriginSentOverF  float64   `json:"origin_sent_over_blob"`
	AllVerified      bool      `json:"all_verified"`

	// Each agent's time over its own bound, as bench swarm takes it (its
	// link; the origin's link for an agent that started with the run; a
	// cold origin's upstream, from its start): what uneven links, late
	// joiners and churn are judged by.
	P50OverBound float64   `json:"p50_over_bound"`
	MaxOverBound float64   `json:"max_over_bound"`
	AgentBounds  []float64 `json:"agent_bound_seconds,omitempty"`
	Replacements int       `json:"churn_replacements,omitempty"`
	LateAgents   int       `json:"late_agents,omitempty"`
	SlowAgents   int       `json:"slow_agents,omitempty"`
	Config       Config    `json:"sim_config"`
	Events       uint64    `json:"sim_events"`
	SimSeconds   float64   `json:"sim_end_seconds"`
	PiecesTraded int64     `json:"sim_piece_transfers"`
	// ConnsPerAgent is taken at the end of the run: on the engine's model
	// complete agents have left each other, so it reads 0 there.
	ConnsPerAgent float64 `json:"sim_conns_per_agent_mean"`
	// ConnsDropped counts connections closed (to make room for another,
	// or by churn; on the engine's model also those a complete agent
	// closes to seeds and idle ones replaced); BlocksCancelled the block
	// requests closed with them.
	ConnsDropped    int64 `json:"sim_conns_dropped"`
	BlocksCancelled int64 `json:"sim_blocks_cancelled"`
	// PiecesLost counts pieces the origin handed out again because the
	// only peer holding them left with them (churn).
	PiecesLost int64 `json:"sim_pieces_lost"`
	// OriginOutSeconds is when the origins had delivered every piece once
	// (all of a piece's blocks from them, to one agent); over TMin it says
	// how much of an agent's time the origin's first copies took, the
	// rest being the last pieces' spread.
	OriginOutSeconds float64 `json:"sim_origin_out_seconds"`
}

// bound is the fluid lower bound of a swarm of n agents with download d
// whose uploads add up to sumUp (Kumar and Ross; with equal links it is
// bench.TMin).
func bound(n int, f, d float64, sumUp, uOrigin, uUpstream float64, cold bool) float64 {
	t := max(f/uOrigin, f/d, float64(n)*f/(uOrigin+sumUp))
	if cold {
		t = max(t, f/uUpstream)
	}
	return t
}

// ownBound is one agent's bound as bench swarm computes it: its download
// link; the origin's upload if it started with the run (late joiners and
// churn replacements find peers holding pieces); a cold origin's upstream
// from the agent's start. The swarm's total upload is left out: it bounds
// the last agent, not each (a fast agent may finish well before it).
func (s *Sim) ownBound(n *node) float64 {
	c := s.cfg
	f := float64(c.BlobBytes)
	b := f / n.down
	if !n.late && !n.replaced {
		b = max(b, f/c.OriginRate)
	}
	if !c.Warm {
		b = max(b, f/c.UpstreamRate-n.start)
	}
	return b
}

func (s *Sim) result() *Result {
	c := s.cfg
	r := &Result{Simulated: true, Agents: c.Agents, Origins: 1, BlobBytes: c.BlobBytes, PieceBytes: c.PieceBytes,
		RateBps: int64(c.Rate), OriginRateBps: int64(c.OriginRate), UpstreamRateBps: int64(c.UpstreamRate),
		WarmOrigins: c.Warm, TMinSeconds: s.tmin, AllVerified: true, Config: c, Events: s.seq, SimSeconds: s.now}
	var times, ratios, ttfb []float64
	var conns int
	for _, n := range s.nodes[1:] {
		r.BytesFromOrigins += n.fromOrigin
		r.BytesFromPeers += n.fromPeers
		r.BytesWasted += n.wasted
		conns += len(n.conns)
		switch {
		case n.replaced:
			r.Replacements++
		case n.late:
			r.LateAgents++
		}
		if n.up < c.Rate {
			r.SlowAgents++
		}
		if n.killed || !n.done {
			continue
		}
		t := n.doneAt - n.start
		b := s.ownBound(n)
		times = append(times, t)
		ratios = append(ratios, t/b)
		r.AgentBounds = append(r.AgentBounds, b)
		ttfb = append(ttfb, n.ttfbAt-n.start)
	}
	r.AgentSeconds = times
	r.AgentSecondsP50, r.AgentSecondsP90, r.AgentSecondsMax = quantile(times, 0.5), quantile(times, 0.9), quantile(times, 1)
	r.P50OverTMin, r.MaxOverTMin = r.AgentSecondsP50/s.tmin, r.AgentSecondsMax/s.tmin
	r.P50OverBound, r.MaxOverBound = quantile(ratios, 0.5), quantile(ratios, 1)
	r.TTFBSecondsP50 = quantile(ttfb, 0.5)
	r.OriginBytesSent = s.originSent
	r.OriginSentOverF = float64(s.originSent) / float64(c.BlobBytes)
	r.PiecesTraded = s.traded
	r.ConnsDropped, r.BlocksCancelled = s.dropped, s.cancelled
	r.PiecesLost = s.lost
	r.OriginOutSeconds = s.originOutAt
	r.ConnsPerAgent = float64(conns) / float64(len(s.nodes)-1)
	return r
}

// quantile as the real bench takes it (nearest rank).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(q*float64(len(s)-1) + 0.5)
	return s[min(i, len(s)-1)]
}

// Run is New and Run in one call.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	s, err := New(cfg)
	if err != nil {
		return nil, err
	}
	return s.Run(ctx)
}
