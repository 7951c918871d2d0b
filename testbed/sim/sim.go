package sim

import (
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
)

const origin = 0 // node index of the origin; agents follow

// node is the origin or an agent.
type node struct {
	up, down float64
	queue    int // block requests in flight per connection
	maxConns int // established connections at most (conns_per_torrent)
	start    float64
	joined   bool
	alive    bool
	done     bool
	doneAt   float64
	ttfbAt   float64 // piece 0 verified: the client's first byte
	late     bool
	replaced bool // a churn replacement
	killed   bool

	// have: pieces verified; inflight: pieces with every chunk requested
	// or received (nothing left to ask for); asked: chunks requested or
	// received; got: chunks received per piece.
	have, inflight bitset
	asked          bitset
	got            []uint8
	nHave          int
	avail          []uint8 // per piece: connected peers that hold (or revealed) it
	conns          []int32
	slots          []uint8 // requests in flight per connection
	out            []bool  // this node dialled the connection
	since          []float64
	halfOpen       int
	pool           []int32 // peers heard of, not dialled yet
	known          bitset  // peers heard of from the tracker (allocated at the first announce)
	upT, downT     []int32 // transfers from and to this node
	nActiveDown    int
	inRate         float64 // sum of the active incoming transfers' rates
	outRate        float64 // sum of the active outgoing transfers' rates
	// The limiters' tokens (the shoal engine; p2p NewLimiter): what each
	// way may take at once, beyond its rate, and when it was counted.
	upTok, downTok     float64
	upTokAt, downTokAt float64
	acc                float64 // reshare's per-downloader sum
	announcing         bool

	// The shoal engine: per connection, the pieces this node holds that
	// the peer was not told of yet (lazy Haves) and when they go out at
	// the latest; pieces a block of which came from the origin; the
	// in-order prefix; pieces with some block asked for.
	untold        []bitset
	lazyAt        []float64
	idleSince     []float64 // per connection: idle both ways since (-1: not idle), seen at each tick
	viaOrigin     bitset
	gotAt         []float64 // per piece: when it was verified
	toldN         []int32   // per connection: pieces the peer told us it holds (toldBy)
	lastBlock     []float64 // per connection: when its last block came (p2p peerConn.lastBlock)
	blockGap      []float64 // per connection: its moving average gap between blocks (blockGap)
	snubUntil     []float64 // per connection: no requests to it before (p2p snubbedUntil)
	quick         []bool    // per connection: its blockGap in the faster half (p2p peerConn.quick)
	underfed      bool      // p2p transfer.underfed: twice the requests to quick peers
	downRate      float64   // bytes received a tick, averaged over two (p2p transfer.downRate)
	downSeen      int64     // bytes received by the last tick
	prefix        int
	begun         bitset
	dialingOrigin bool

	// This agent's connection to the origin, as the seeder sees it.
	originConn bool
	revealed   bitset
	pending    int

	fromOrigin, fromPeers, wasted int64

	turnBatch uint64 // Config.Batch: the batch this uploader's turn serves (0: none)
}

// transfer is one chunk of a piece on its way from one node to another.
type transfer struct {
	from, to, piece int32
	chunk           int32
	remaining, rate float64
	last            float64 // when remaining was last brought up to date
	active, live    bool
	ver             uint32
	seq             uint64  // the origin's reveal order
	batch           uint64  // Config.Batch: the batch it was asked in (0: none)
	asked           float64 // when it was requested
	bytes, waste    int64
}

// Sim is one run in progress.
type Sim struct {
	cfg    Config
	rng    *rand.Rand
	now    float64
	seq    uint64
	events eventHeap

	nPieces  int
	starts   []int64 // piece p is bytes starts[p]..starts[p+1]
	cpp      int     // chunks per piece (the last piece may have fewer)
	nodes    []*node
	maxNodes int // the origin, the agents and their churn replacements
	xfers    []transfer
	free     []int32

	// The origin's seeder state.
	availN      int       // pieces [0, availN) are at the origin
	assigned    []int32   // peers each piece was revealed to
	holders     []int32   // origin-connected peers holding each piece
	revealedAt  []float64 // last reveal of each piece
	lostAt      []float64 // when each piece's last holder left with it (-1: not lost)
	lost        int64     // pieces handed out again after they were lost
	fresh       int       // no piece below is unrevealed and unheld (a cursor)
	originIdle  int       // origin-connected peers fetching nothing from it that lack a piece (originIdle)
	revealSeq   map[int64]uint64
	nReveals    uint64
	retryQueued bool

	// The tracker's peer lists (the origin is complete from the start).
	complete, incomplete []int32
	trackPos             []int32 // index in its list, -1 if absent

	measured, finished int
	tmin               float64
	originSent         int64
	originOut          []bool  // pieces the origin has delivered at least once
	originOutN         int     // how many
	originOutAt        float64 // when the last of them arrived
	dropped, cancelled int64   // connections closed to make room; blocks cancelled with them
	traded             int64
	reqSeq             uint64
	batchSeq           uint64    // Config.Batch: batches asked so far
	curBatch           uint64    // the batch request is asking in
	engine             bool      // cfg.Engine is the shoal engine
	bursts             bool      // the limiters' bursts are modelled (the engine, not NoBurst)
	scratch            [2][]flow // reshare's buffers, one per cascade depth
	sampled            []int32   // sample's buffer
	gaps               []float64 // feed's buffer
	drawn              []uint32  // sample: the call that last drew each node
	stamp              uint32
}

// New prepares a run; Run runs it.
func New(cfg Config) (*Sim, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	s := &Sim{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5140a1)), revealSeq: map[int64]uint64{}, engine: cfg.Engine == EngineShoal,
		bursts: cfg.Engine == EngineShoal && !cfg.NoBurst}
	s.starts = pieceStarts(cfg)
	s.nPieces = len(s.starts) - 1
	s.cpp = int((max(cfg.PieceBytes, cfg.EdgePieceBytes) + cfg.ChunkBytes - 1) / cfg.ChunkBytes)
	s.assigned = make([]int32, s.nPieces)
	s.holders = make([]int32, s.nPieces)
	s.revealedAt = make([]float64, s.nPieces)
	s.lostAt = make([]float64, s.nPieces)
	for p := range s.lostAt {
		s.lostAt[p] = -1
	}
	s.originOut = make([]bool, s.nPieces)

	n := cfg.Agents
	nChurn := int(cfg.Churn*float64(n) + 0.5)
	s.maxNodes = 1 + n + nChurn // churn replaces each killed agent once
	s.nodes = make([]*node, 0, s.maxNodes)
	s.trackPos = make([]int32, 0, 1+n+nChurn)
	o := s.newNode(cfg.OriginRate, 0)
	o.joined, o.done = true, true
	s.complete = append(s.complete, origin)
	s.trackPos[origin] = 0

	// Which agents are slow, late or killed: a seeded permutation each.
	slow := s.pick(n, cfg.Uneven)
	late := s.pick(n, cfg.Late)
	var sumUp float64
	for i := range n {
		r := cfg.Rate
		if slow[i] {
			r /= 4
		}
		sumUp += r
		a := s.newNode(r, r)
		if slow[i] && cfg.SlowConns > 0 {
			a.maxConns = cfg.SlowConns
		}
	}
	s.tmin = bound(n, float64(cfg.BlobBytes), cfg.Rate, sumUp, cfg.OriginRate, cfg.UpstreamRate, !cfg.Warm)
	for i := range n {
		a := s.nodes[1+i]
		if late[i] {
			a.late, a.start = true, s.tmin/2
		} else {
			a.start = s.rng.Float64() * cfg.JoinSpread
		}
		s.push(event{t: a.start, kind: evJoin, a: int32(1 + i)})
	}
	killed := s.pick(n, cfg.Churn)
	for i := range n {
		if killed[i] {
			t := s.nodes[1+i].start + (0.2+0.6*s.rng.Float64())*s.tmin
			s.push(event{t: t, kind: evKill, a: int32(1 + i)})
		}
	}
	s.measured = n
	if cfg.Warm {
		s.availN = s.nPieces
	} else {
		for i := range s.nPieces {
			end := s.starts[i+1]
			s.push(event{t: float64(end) / cfg.UpstreamRate, kind: evAvail, a: int32(i)})
		}
	}
	return s, nil
}

// pieceStarts cuts the blob: piece p is bytes starts[p] to starts[p+1].
func pieceStarts(cfg Config) []int64 {
	starts := []int64{0}
	for off := int64(0); off < cfg.BlobBytes; {
		l := cfg.PieceBytes
		switch end := cfg.BlobBytes - cfg.EdgeBytes; {
		case cfg.EdgePieceBytes == 0:
		case off < cfg.EdgeBytes || off >= end:
			l = cfg.EdgePieceBytes
		case off+l > end:
			l = end - off
		}
		off = min(off+l, cfg.BlobBytes)
		starts = append(starts, off)
	}
	return starts
}

// pick marks round(frac*n) of n items, chosen by the seed.
func (s *Sim) pick(n int, frac float64) []bool {
	out := make([]bool, n)
	k := int(frac*float64(n) + 0.5)
	for _, i := range s.rng.Perm(n)[:k] {
		out[i] = true
	}
	return out
}

func (s *Sim) newNode(up, down float64) *node {
	a := &node{up: up, down: down, queue: s.cfg.queueFor(down), maxConns: s.cfg.ConnsPerTorrent, alive: true,
		have: newBitset(s.nPieces), inflight: newBitset(s.nPieces), revealed: newBitset(s.nPieces)}
	if s.bursts {
		a.upTok, a.downTok = burstOf(up), burstOf(down) // a limiter starts full
	}
	if len(s.nodes) > 0 { // the origin keeps no per-piece availability
		a.avail = make([]uint8, s.nPieces)
		a.got = make([]uint8, s.nPieces)
		a.asked = newBitset(s.nPieces * s.cpp)
		if s.engine {
			a.viaOrigin = newBitset(s.nPieces)
			a.begun = newBitset(s.nPieces)
			a.gotAt = make([]float64, s.nPieces)
		}
	} else {
		for i := range s.nPieces {
			a.have.set(i)
		}
		a.nHave = s.nPieces
	}
	s.nodes = append(s.nodes, a)
	s.trackPos = append(s.trackPos, -1)
	return a
}

func (s *Sim) push(e event) {
	s.seq++
	e.seq = s.seq
	s.events.push(e)
}

func (s *Sim) pieceLen(p int) int64 {
	return s.starts[p+1] - s.starts[p]
}

// chunks is how many chunks piece p has; chunkLen the length of its k-th.
func (s *Sim) chunks(p int) int {
	return int((s.pieceLen(p) + s.cfg.ChunkBytes - 1) / s.cfg.ChunkBytes)
}

func (s *Sim) chunkLen(p, k int) int64 {
	return min(s.cfg.ChunkBytes, s.pieceLen(p)-int64(k)*s.cfg.ChunkBytes)
}

// Run simulates until every agent measured has the blob.
func (s *Sim) Run(ctx context.Context) (*Result, error) {
	limit := 1000*s.tmin + 1000
	for k := 0; s.finished < s.measured; k++ {
		if s.events.len() == 0 {
			return nil, fmt.Errorf("sim: stalled at %.2f s with %d of %d agents done", s.now, s.finished, s.measured)
		}
		if k%65536 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		e := s.events.pop()
		if e.t > limit {
			return nil, fmt.Errorf("sim: no end after %.0f s (%d of %d agents done)", limit, s.finished, s.measured)
		}
		s.now = e.t
		s.dispatch(e)
	}
	return s.result(), nil
}

// dispatch runs event e.
func (s *Sim) dispatch(e event) {
	switch e.kind {
	case evJoin:
		s.join(e.a)
	case evAnnounce:
		s.announce(e.a)
	case evConnect:
		s.connect(e.a, e.b)
	case evStart:
		s.startTransfer(e.a)
	case evDone:
		s.finishTransfer(e.a)
	case evAvail:
		s.availN = max(s.availN, int(e.a)+1)
		s.refill()
	case evRefill:
		s.retryQueued = false
		s.refill()
	case evLost:
		if p := int(e.a); s.lostAt[p] >= 0 && s.holders[p] == 0 {
			s.assigned[p] = 0 // handed out as if new
			s.fresh = min(s.fresh, p)
			s.refill()
		}
	case evKill:
		s.kill(e.a)
	case evHaves:
		s.lazyDue(e.a, e.b)
	case evRedial:
		s.redial(e.a, e.b)
	case evTick:
		s.tick(e.a)
	}
}

// join: the agent announces and starts dialling.
func (s *Sim) join(a int32) {
	n := s.nodes[a]
	if !n.alive {
		return
	}
	n.joined = true
	s.track(a)
	s.announce(a)
	if s.engine {
		s.push(event{t: s.now + 1, kind: evTick, a: a})
	}
}

// track adds a to the tracker's incomplete or complete list.
func (s *Sim) track(a int32) {
	if s.trackPos[a] >= 0 {
		return
	}
	l := &s.incomplete
	if s.nodes[a].done {
		l = &s.complete
	}
	s.trackPos[a] = int32(len(*l))
	*l = append(*l, a)
}

// trackComplete moves a to the complete list (its announce on completion).
func (s *Sim) trackComplete(a int32) {
	i := s.trackPos[a]
	if i < 0 {
		return
	}
	last := s.incomplete[len(s.incomplete)-1]
	s.incomplete[i] = last
	s.trackPos[last] = i
	s.incomplete = s.incomplete[:len(s.incomplete)-1]
	s.trackPos[a] = int32(len(s.complete))
	s.complete = append(s.complete, a)
}

// announce asks the tracker for peers: complete ones first, each group a
// random sample, up to max_peers, never a itself.
func (s *Sim) announce(a int32) {
	n := s.nodes[a]
	if !n.alive || n.done {
		return
	}
	if n.known == nil {
		n.known = newBitset(s.maxNodes)
	}
	want := s.cfg.MaxPeers
	for _, l := range [][]int32{s.complete, s.incomplete} {
		got := s.sample(l, a, want)
		for _, p := range got {
			if !n.known.has(int(p)) {
				n.known.set(int(p))
				n.pool = append(n.pool, p)
			}
		}
		want -= len(got)
	}
	s.dial(a)
	s.push(event{t: s.now + s.cfg.AnnounceInterval, kind: evAnnounce, a: a})
}

// sample returns up to k members of l other than self, chosen at random
// (in a buffer the next call reuses).
func (s *Sim) sample(l []int32, self int32, k int) []int32 {
	if k <= 0 || len(l) == 0 {
		return nil
	}
	out := s.sampled[:0]
	defer func() { s.sampled = out[:0] }()
	if len(l) <= k+1 {
		// The whole group, in random order all the same: the tracker's
		// partial Fisher-Yates shuffle (peerstore.Memory.sample). In list
		// order every agent of a swarm under max_peers dialled the same
		// first peers, which the shoal engine does (the tracker's order):
		// cliques of agents holding the same pieces, N = 32 at 1.39x.
		for _, p := range l {
			if p != self {
				out = append(out, p)
			}
		}
		s.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
		return out[:min(len(out), k)]
	}
	// Draw until k distinct; a stamp per node marks those drawn this call.
	if s.drawn == nil {
		s.drawn = make([]uint32, s.maxNodes)
	}
	s.stamp++
	for len(out) < k {
		p := l[s.rng.IntN(len(l))]
		if p != self && s.drawn[p] != s.stamp {
			s.drawn[p] = s.stamp
			out = append(out, p)
		}
	}
	return out
}

// dial opens connections from a's pool while it has room (the library's
// half-open and established caps).
func (s *Sim) dial(a int32) {
	if s.engine {
		s.dialEngine(a)
		return
	}
	n := s.nodes[a]
	for !n.done && n.alive && len(n.conns) < n.maxConns && n.halfOpen < s.cfg.HalfOpen && len(n.pool) > 0 {
		i := s.rng.IntN(len(n.pool))
		b := n.pool[i]
		n.pool[i] = n.pool[len(n.pool)-1]
		n.pool = n.pool[:len(n.pool)-1]
		if slices.Contains(n.conns, b) {
			continue
		}
		n.halfOpen++
		// TCP and BitTorrent handshakes: 1.5 round trips, plus a little
		// jitter so that dials finish in no fixed order.
		s.push(event{t: s.now + 1.5*s.cfg.RTT + 1e-6*s.rng.Float64(), kind: evConnect, a: a, b: b})
	}
}

// connect establishes a's dial to b if both have room. A node at its cap
// makes room as the library does: it drops an outgoing connection (not the
// origin's) for an incoming one when it has more than one outgoing
// connection over its incoming ones, and the other way round.
func (s *Sim) connect(a, b int32) {
	na, nb := s.nodes[a], s.nodes[b]
	if s.engine && b == origin {
		na.dialingOrigin = false
	} else {
		na.halfOpen--
	}
	if !na.alive || na.done {
		return
	}
	if s.engine {
		if !nb.alive || !nb.joined || slices.Contains(na.conns, b) ||
			(b != origin && (!s.roomEngine(a, true) || !s.roomEngine(b, false))) {
			if !slices.Contains(na.conns, b) {
				s.push(event{t: s.now + redialAfter, kind: evRedial, a: a, b: b})
			}
			s.dial(a)
			return
		}
	} else if !nb.alive || !nb.joined || slices.Contains(na.conns, b) ||
		!s.room(a, true) || (b != origin && !s.room(b, false)) {
		s.dial(a)
		return
	}
	na.conns = append(na.conns, b)
	na.slots = append(na.slots, 0)
	na.out = append(na.out, true)
	na.since = append(na.since, s.now)
	nb.conns = append(nb.conns, a)
	nb.slots = append(nb.slots, 0)
	nb.out = append(nb.out, false)
	nb.since = append(nb.since, s.now)
	if s.engine {
		for _, x := range []*node{na, nb} {
			var u bitset
			if x != s.nodes[origin] {
				u = newBitset(s.nPieces)
			}
			x.untold = append(x.untold, u)
			x.lazyAt = append(x.lazyAt, 0)
			x.idleSince = append(x.idleSince, -1)
			x.lastBlock = append(x.lastBlock, 0)
			x.blockGap = append(x.blockGap, 0)
			x.snubUntil = append(x.snubUntil, 0)
			x.quick = append(x.quick, false)
		}
		na.toldN = append(na.toldN, int32(nb.nHave))
		nb.toldN = append(nb.toldN, int32(na.nHave))
	}
	// Bitfields: each side learns what the other holds.
	if b == origin {
		was := s.isOriginIdle(na)
		na.originConn = true
		s.originIdleChanged(na, was)
		eachSet(na.have, func(p int) { s.holders[p]++ })
		s.fill(a)
	} else {
		eachSet(nb.have, func(p int) { na.avail[p]++ })
		eachSet(na.have, func(p int) { nb.avail[p]++ })
		s.schedule(b, a)
	}
	s.schedule(a, b)
	s.dial(a)
}

// room reports whether n can take one more connection (outgoing or not),
// dropping one of the other direction if the library would.
func (s *Sim) room(a int32, outgoing bool) bool {
	n := s.nodes[a]
	if len(n.conns) < n.maxConns {
		return true
	}
	nOut := 0
	for _, o := range n.out {
		if o {
			nOut++
		}
	}
	nIn := len(n.conns) - nOut
	if outgoing && nIn-nOut <= 1 || !outgoing && nOut-nIn <= 1 {
		// Else a connection given a minute to prove itself that has not
		// (the library's worst half): here one to a peer as complete as
		// this node, or any over a minute old if this node still needs data.
		for i, v := range n.conns {
			if v != origin && s.now-n.since[i] >= 60 && (s.nodes[v].done == n.done || !n.done) {
				s.dropConn(a, v)
				return true
			}
		}
		return false
	}
	// Drop the newest connection of the other direction (the library's
	// worst: the fewest useful chunks so far), never the origin's.
	for i := len(n.conns) - 1; i >= 0; i-- {
		if n.out[i] != outgoing && n.conns[i] != origin {
			s.dropConn(a, n.conns[i])
			return true
		}
	}
	return false
}

// dropConn closes the connection between a and b: requests on it are
// cancelled, availability and the seeder's counts forget it.
func (s *Sim) dropConn(a, b int32) {
	s.dropped++
	// Lazy Haves not sent yet were never counted on the other side:
	// untold[0] is what b has not told a, untold[1] what a has not told b.
	var untold [2]bitset
	if s.engine {
		if i := slices.Index(s.nodes[b].conns, a); i >= 0 {
			untold[0] = s.nodes[b].untold[i]
		}
		if i := slices.Index(s.nodes[a].conns, b); i >= 0 {
			untold[1] = s.nodes[a].untold[i]
		}
	}
	told := func(k, p int) bool { return untold[k] == nil || !untold[k].has(p) }
	var touched [2]int32
	for k, x := range [2][2]int32{{a, b}, {b, a}} {
		u, w := x[0], x[1] // uploads from u to w
		touched[k] = u
		for _, id := range slices.Clone(s.nodes[u].upT) {
			if tr := s.xfers[id]; tr.to == w {
				s.cancelled++
				s.unlink(id)
				s.nodes[w].inflight.clear(int(tr.piece))
				s.nodes[w].asked.clear(int(tr.piece)*s.cpp + int(tr.chunk))
			}
		}
	}
	for k, x := range [2][2]int32{{a, b}, {b, a}} {
		u, v := x[0], x[1] // u forgets v
		nu, nv := s.nodes[u], s.nodes[v]
		ci := slices.Index(nu.conns, v)
		if ci < 0 {
			continue
		}
		nu.conns = slices.Delete(nu.conns, ci, ci+1)
		nu.slots = slices.Delete(nu.slots, ci, ci+1)
		nu.out = slices.Delete(nu.out, ci, ci+1)
		nu.since = slices.Delete(nu.since, ci, ci+1)
		if s.engine {
			nu.untold = slices.Delete(nu.untold, ci, ci+1)
			nu.lazyAt = slices.Delete(nu.lazyAt, ci, ci+1)
			nu.idleSince = slices.Delete(nu.idleSince, ci, ci+1)
			nu.toldN = slices.Delete(nu.toldN, ci, ci+1)
			nu.lastBlock = slices.Delete(nu.lastBlock, ci, ci+1)
			nu.blockGap = slices.Delete(nu.blockGap, ci, ci+1)
			nu.snubUntil = slices.Delete(nu.snubUntil, ci, ci+1)
			nu.quick = slices.Delete(nu.quick, ci, ci+1)
		}
		switch {
		case u == origin:
			was := s.isOriginIdle(nv)
			nv.originConn = false
			seed := nv.nHave == s.nPieces
			for p := range s.nPieces {
				if nv.have.has(p) && told(k, p) {
					s.holders[p]--
					if s.holders[p] == 0 && !seed && s.assigned[p] == 1 && s.now-s.revealedAt[p] < s.lostAfter() && !s.originFetching(p) {
						s.lostAt[p] = s.now
						s.push(event{t: s.now + s.lostAfter(), kind: evLost, a: int32(p)})
					}
				} else if nv.revealed.has(p) {
					s.assigned[p]-- // it never got it: hand it out again
					s.fresh = min(s.fresh, p)
				}
				if nv.revealed.has(p) && !nv.have.has(p) {
					nv.avail[p]--
				}
			}
			nv.revealed = newBitset(s.nPieces)
			nv.pending = 0
			s.originIdleChanged(nv, was)
		case v == origin:
		default:
			eachSet(nv.have, func(p int) {
				if told(k, p) {
					nu.avail[p]--
				}
			})
		}
	}
	for _, u := range touched {
		if s.nodes[u].alive {
			s.reshare(u)
			s.reshareInto(u)
		}
	}
	if a == origin || b == origin {
		s.refill()
	}
	if s.engine {
		// The engine keeps every peer the tracker listed as a candidate:
		// one whose connection ended may be dialled again.
		for _, x := range [2][2]int32{{a, b}, {b, a}} {
			u, v := x[0], x[1]
			if nu := s.nodes[u]; u != origin && nu.known != nil && (v == origin || nu.known.has(int(v))) && !slices.Contains(nu.pool, v) {
				nu.pool = append(nu.pool, v)
			}
		}
	}
	for _, u := range touched {
		if nu := s.nodes[u]; u != origin && nu.alive && !nu.done {
			for _, x := range slices.Clone(nu.conns) {
				s.schedule(u, x)
			}
			s.dial(u)
		}
	}
}

// schedule fills w's request slots on its connection to v: the first
// chunk not yet asked for of the piece choose picks (the library orders
// requests by piece, then chunk, so a piece's chunks go out together, to
// as many peers as have free slots and hold it).
func (s *Sim) schedule(w, v int32) {
	n := s.nodes[w]
	if n.done || !n.alive {
		return
	}
	ci := slices.Index(n.conns, v)
	if ci < 0 || s.engine && n.snubUntil[ci] > s.now && (s.cfg.KeepSnubs || !n.underfed) {
		return
	}
	asked := false
	defer func() {
		if asked && s.engine {
			s.flushHaves(w, ci) // they ride with the requests
		}
	}()
	depth := s.queueDepth(n, ci)
	batch := s.cfg.Batch > 1 && s.engine && v != origin
	if batch {
		depth = max(depth, s.cfg.Batch)
		if n.slots[ci] > 0 && depth-int(n.slots[ci]) < s.cfg.Batch {
			return // the next batch waits for room for a whole one
		}
		s.batchSeq++
		s.curBatch = s.batchSeq
		defer func() { s.curBatch = 0 }()
		depth = min(depth, int(n.slots[ci])+s.cfg.Batch)
	}
	for int(n.slots[ci]) < depth {
		p := s.choose(w, v)
		if p < 0 {
			return
		}
		k, c := -1, s.chunks(p)
		for j := range c {
			if !n.asked.has(p*s.cpp + j) {
				if k < 0 {
					k = j
				} else {
					break
				}
			}
			if j == c-1 {
				n.inflight.set(p) // k is the last chunk left to ask for
			}
		}
		n.asked.set(p*s.cpp + k)
		if s.engine && s.cpp > 1 {
			n.begun.set(p)
		}
		asked = true
		n.slots[ci]++
		s.request(v, w, p, k)
	}
}

// choose is the piece w asks v for next: among those v has (or revealed)
// and w neither holds nor has requested, the rarest among w's peers, then
// the lowest index; or the lowest index with InOrder. -1 if none.
func (s *Sim) choose(w, v int32) int {
	if s.engine {
		return s.chooseEngine(w, v)
	}
	n := s.nodes[w]
	src := s.nodes[v].have
	if v == origin {
		src = n.revealed
	}
	best := -1
	bestA := uint8(255)
	each(src, n.have, n.inflight, func(p int) bool {
		if s.cfg.InOrder {
			best = p
			return false
		}
		if a := n.avail[p]; best < 0 || a < bestA {
			best, bestA = p, a
		}
		return bestA > 1 // nothing is rarer than one holder
	})
	return best
}

// request starts a transfer of chunk k of piece p from v to w after the
// request latency.
func (s *Sim) request(v, w int32, p, k int) {
	var id int32
	if k := len(s.free); k > 0 {
		id = s.free[k-1]
		s.free = s.free[:k-1]
	} else {
		s.xfers = append(s.xfers, transfer{})
		id = int32(len(s.xfers) - 1)
		s.events.addTransfer(id)
	}
	b := s.chunkLen(p, k)
	tr := &s.xfers[id]
	*tr = transfer{from: v, to: w, piece: int32(p), chunk: int32(k), live: true, ver: tr.ver + 1, bytes: b, asked: s.now}
	if v == origin {
		tr.seq = s.revealSeq[int64(w)*int64(s.nPieces)+int64(p)]<<8 | uint64(k)
	} else {
		tr.waste = int64(float64(b) * s.cfg.Waste)
		s.reqSeq++
		tr.seq = s.reqSeq // SerialUploads: requests in arrival order
		tr.batch = s.curBatch
	}
	tr.remaining = float64(tr.bytes + tr.waste)
	s.nodes[v].upT = append(s.nodes[v].upT, id)
	s.nodes[w].downT = append(s.nodes[w].downT, id)
	s.push(event{t: s.now + s.cfg.RTT + s.cfg.RequestLatency, kind: evStart, a: id, ver: tr.ver})
}

func (s *Sim) startTransfer(id int32) {
	tr := &s.xfers[id]
	if !tr.live || tr.active {
		return
	}
	tr.active, tr.last = true, s.now
	s.nodes[tr.to].nActiveDown++
	if s.bursts {
		// What both limiters hold goes at once (a real transfer's first
		// bytes wait for a round trip, not for the cap); a byte is left
		// for the rate, so the transfer ends by the usual event.
		u, d := s.nodes[tr.from], s.nodes[tr.to]
		s.settleUp(u)
		s.settleDown(d)
		if x := min(tr.remaining-1, u.upTok, d.downTok); x > 0 {
			tr.remaining -= x
			u.upTok -= x
			d.downTok -= x
		}
	}
	s.reshareInto(tr.to)
	if s.engine { // the block's message carries the uploader's lazy Haves
		if ci := slices.Index(s.nodes[tr.from].conns, tr.to); ci >= 0 {
			s.flushHaves(tr.from, ci)
		}
	}
}

// reshareInto recomputes the rates of every uploader sending to w (w's
// senders, hence what each may take, changed).
func (s *Sim) reshareInto(w int32) { s.reshareIntoExcept(w, -1, 1) }

func (s *Sim) reshareIntoExcept(w, except int32, depth int) {
	var ups [16]int32
	for _, u := range s.sendersTo(w, except, ups[:0]) {
		s.reshareDepth(u, depth)
	}
}

// reshare sets the rates of u's active uploads. Each (u, downloader) pair
// may take what of the downloader's link the other peers sending to it
// leave; on the shoal engine at least an even share of it: the download
// token bucket is shared, but each connection's reader waits for its
// block's tokens in turn, so no sender is starved by the others (first
// come, a flow from the origin to a slow agent whose link its peers filled
// sat at rate 0 until they let go, and the swarm waited for the piece).
// The library's model keeps first come, as it was fitted: with an even
// share its rows moved by -0.035..+0.020 and two held ones passed +0.05 by
// 0.005 (the library is no longer the default engine; it is not refitted).
// An agent on the library shares its upload max-min fairly among its
// pairs; the origin, and an agent on the shoal engine, serve theirs in
// turn (the seeder in reveal order; the engine, whose writers take
// turns at the upload cap, the downloader that told of the fewest pieces
// first, then in request order, or in request order alone with
// UploadOrder "request"), each up to its pair's cap. When a pair slows down, the downloader's
// other senders are reshared once, to take up the slack; when one rises to
// its even share of a full link, they give it up.
func (s *Sim) reshare(u int32) { s.reshareDepth(u, 1) }

func (s *Sim) reshareDepth(u int32, depth int) {
	n := s.nodes[u]
	s.settleUp(n)
	flows := s.scratch[depth][:0]
	// The engine's upload turns: the downloader that told of the fewest
	// pieces first (p2p peerConn.awaitUpload; toldBy); with UploadRare,
	// the piece fewest of the uploader's peers hold first. The origin
	// keeps its reveal order.
	behind := s.engine && u != origin && s.cfg.UploadOrder != UploadRequest
	rare := s.cfg.UploadOrder == UploadRare
	pace := s.cfg.UploadOrder == UploadPace
	for _, id := range n.upT {
		tr := &s.xfers[id]
		if !tr.active {
			continue
		}
		tr.remaining -= tr.rate * (s.now - tr.last)
		tr.last = s.now
		seq := tr.seq
		if behind {
			// Request order within a rank: seq counts requests, far below
			// 2^44. The rank is what the downloader told the uploader it
			// holds (p2p's hasN): its bitfield, then Haves of pieces the
			// uploader lacked.
			rank := uint64(s.toldBy(u, tr.to))
			if pace {
				// What it told of against what its own cap could have
				// brought it since it began, in 1/1024.
				d := s.nodes[tr.to]
				due := max(1, min(float64(s.nPieces), (s.now-d.start)*d.down/float64(s.cfg.PieceBytes)))
				rank = uint64(min(float64(rank)*1024/due, 1<<19-1))
			}
			if rare {
				// In 1/4096 of the blob: that fraction, and 1/128 for each
				// of the uploader's peers holding the piece, up to 7.
				rank = rank<<12/uint64(s.nPieces) + uint64(min(s.copies(u, int(tr.piece)), 7))<<5
			}
			if !s.cfg.NoSlowerLast && s.nodes[tr.to].up < n.up/2 {
				// Told an upload cap under half ours: after the others
				// (p2p peerConn.behind, slower). Ranks stay under 2^20.
				rank = min(rank, 1<<19-1) | 1<<19
			}
			if tr.batch != 0 && tr.batch == n.turnBatch {
				rank = 0 // the batch this turn began is served to its end
			}
			seq |= rank << 44
		}
		flows = append(flows, flow{id: id, to: tr.to, seq: seq, old: tr.rate})
	}
	// What each downloader's other senders leave: its incoming rate less
	// this uploader's own flows to it (summed per downloader in acc, in
	// the flows' order).
	for _, f := range flows {
		s.nodes[f.to].acc = 0
	}
	for _, f := range flows {
		s.nodes[f.to].acc += f.old
	}
	for i := range flows {
		d := s.nodes[flows[i].to]
		flows[i].cap = max(0, d.down-(d.inRate-d.acc))
		if s.engine {
			var ups [16]int32
			senders := max(1, len(s.sendersTo(flows[i].to, -1, ups[:0])))
			flows[i].cap = max(flows[i].cap, d.down/float64(senders))
		}
	}
	defer func() { s.scratch[depth] = flows }()
	left := n.up
	if u == origin || s.cfg.SerialUploads || s.engine {
		sortFlows(flows, true)
		if len(flows) > 0 && u != origin {
			n.turnBatch = s.xfers[flows[0].id].batch
		}
		for _, f := range flows {
			s.nodes[f.to].acc = 0 // what this uploader gave each downloader so far
		}
		for i := range flows {
			f := &flows[i]
			d := s.nodes[f.to]
			f.rate = max(0, min(f.cap-d.acc, left))
			d.acc += f.rate
			left -= f.rate
		}
	} else {
		// Pairs (one per downloader), by cap, max-min fair; then each
		// pair's rate to one block at a time (splitPair).
		sortFlows(flows, false)
		pairs := 0
		for i := range flows {
			if i == 0 || flows[i].to != flows[i-1].to {
				pairs++
			}
		}
		for i := 0; i < len(flows); {
			j := i
			for j < len(flows) && flows[j].to == flows[i].to {
				j++
			}
			r := max(0, min(flows[i].cap, left/float64(pairs)))
			left -= r
			pairs--
			splitPair(flows[i:j], r)
			i = j
		}
	}
	var slower [8]int32
	slow := slower[:0]
	for _, f := range flows {
		tr := &s.xfers[f.id]
		// Rises under 0.1 % are left for the next reshare: they would
		// only multiply the events.
		if f.rate == tr.rate || (f.rate > tr.rate && f.rate < tr.rate*1.001) {
			continue
		}
		if f.rate < tr.rate && !slices.Contains(slow, f.to) {
			slow = append(slow, f.to)
		}
		s.settleDown(s.nodes[f.to])
		s.nodes[f.to].inRate += f.rate - tr.rate
		n.outRate += f.rate - tr.rate
		tr.rate = f.rate
		tr.ver++
		if f.rate > 0 {
			s.seq++
			s.events.setDone(f.id, s.now+max(tr.remaining, 0)/f.rate, s.seq)
		} else {
			s.events.cancelDone(f.id)
		}
	}
	if depth > 0 {
		for _, d := range slow {
			s.reshareIntoExcept(d, u, depth-1)
		}
		for _, f := range flows {
			if d := s.nodes[f.to]; d.inRate > d.down*(1+1e-6) {
				s.reshareIntoExcept(f.to, u, 0)
			}
		}
	}
}

// sendersTo appends to buf the peers other than except with an active
// transfer to w.
func (s *Sim) sendersTo(w, except int32, buf []int32) []int32 {
	for _, id := range s.nodes[w].downT {
		tr := &s.xfers[id]
		if tr.active && tr.from != except && !slices.Contains(buf, tr.from) {
			buf = append(buf, tr.from)
		}
	}
	return buf
}

// flow is one active transfer as reshare weighs it.
type flow struct {
	id   int32
	to   int32
	cap  float64 // what the pair may take of the downloader's link
	seq  uint64
	rate float64
	old  float64
}

// sortFlows sorts fs by seq, or by cap then downloader: an insertion sort
// for an agent's handful of flows, pdqsort for the origin's many. (Flows
// that tie on cap and downloader go to one connection: reshare treats
// them alike in any order.)
func sortFlows(fs []flow, bySeq bool) {
	if len(fs) > 16 {
		slices.SortFunc(fs, func(a, b flow) int {
			switch {
			case bySeq:
				return cmp.Compare(a.seq, b.seq)
			case a.cap != b.cap:
				return cmp.Compare(a.cap, b.cap)
			}
			return cmp.Compare(a.to, b.to)
		})
		return
	}
	less := func(a, b *flow) bool {
		if bySeq {
			return a.seq < b.seq
		}
		return a.cap < b.cap || a.cap == b.cap && a.to < b.to
	}
	for i := 1; i < len(fs); i++ {
		for j := i; j > 0 && less(&fs[j], &fs[j-1]); j-- {
			fs[j], fs[j-1] = fs[j-1], fs[j]
		}
	}
}

// unlink takes transfer id off both ends' lists.
func (s *Sim) unlink(id int32) {
	tr := &s.xfers[id]
	del := func(l *[]int32) {
		if i := slices.Index(*l, id); i >= 0 {
			(*l)[i] = (*l)[len(*l)-1]
			*l = (*l)[:len(*l)-1]
		}
	}
	del(&s.nodes[tr.from].upT)
	del(&s.nodes[tr.to].downT)
	if tr.active {
		s.nodes[tr.to].nActiveDown--
	}
	s.settleDown(s.nodes[tr.to])
	s.settleUp(s.nodes[tr.from])
	s.nodes[tr.to].inRate -= tr.rate
	s.nodes[tr.from].outRate -= tr.rate
	tr.live, tr.active, tr.rate = false, false, 0
	tr.ver++
	s.events.cancelDone(id)
	s.free = append(s.free, id)
}

func (s *Sim) finishTransfer(id int32) {
	tr := s.xfers[id]
	v, w, p := tr.from, tr.to, int(tr.piece)
	s.unlink(id)
	s.traded++
	nw := s.nodes[w]
	if ci := slices.Index(nw.conns, v); ci >= 0 {
		nw.slots[ci]--
		if s.engine {
			s.gotBlock(nw, ci, tr.asked)
		}
	}
	nw.got[p]++
	if v == origin {
		if s.engine {
			nw.viaOrigin.set(p)
		}
		nw.fromOrigin += tr.bytes
		s.originSent += tr.bytes
		if !s.originOut[p] && int(nw.got[p]) == s.chunks(p) {
			s.originOut[p] = true
			if s.originOutN++; s.originOutN == s.nPieces {
				s.originOutAt = s.now
			}
		}
	} else {
		nw.fromPeers += tr.bytes
		nw.wasted += tr.waste
	}
	s.reshare(v)
	s.reshareInto(w)
	if int(nw.got[p]) == s.chunks(p) && !nw.have.has(p) {
		s.gotPiece(w, p)
	}
	s.schedule(w, v)
}

// gotPiece: w verified piece p and tells its peers (a Have each).
func (s *Sim) gotPiece(w int32, p int) {
	n := s.nodes[w]
	was := s.isOriginIdle(n)
	n.have.set(p)
	n.nHave++
	s.originIdleChanged(n, was)
	if n.gotAt != nil {
		n.gotAt[p] = s.now
	}
	if p == 0 {
		n.ttfbAt = s.now
	}
	if n.nHave == s.nPieces {
		n.done, n.doneAt = true, s.now
		s.trackComplete(w)
		if !n.killed {
			s.finished++
		}
	}
	if s.engine {
		s.haveEngine(w, p)
		return
	}
	for _, v := range n.conns {
		s.tell(w, v, p)
	}
}

// kill stops agent a at once (a spot instance gone: no "stopped" announce,
// so the tracker keeps listing it) and starts its replacement.
func (s *Sim) kill(a int32) {
	n := s.nodes[a]
	if !n.alive {
		return
	}
	n.alive, n.killed = false, true
	s.measured-- // killed agents are not measured; their replacements are
	if n.done {
		s.finished--
	}
	for _, v := range slices.Clone(n.conns) {
		s.dropConn(a, v)
	}
	// The replacement: a fresh agent with the same link, starting now.
	r := s.newNode(n.up, n.down)
	r.replaced, r.start, r.maxConns = true, s.now, n.maxConns
	s.measured++
	s.push(event{t: s.now, kind: evJoin, a: int32(len(s.nodes) - 1)})
}

// splitPair gives a pair's rate r to its flows: a connection carries one
// chunk message at a time, so the chunks requested on it go one after the
// other, in request order.
func splitPair(fs []flow, r float64) {
	first := 0
	for k := range fs {
		if fs[k].seq < fs[first].seq {
			first = k
		}
		fs[k].rate = 0
	}
	fs[first].rate = r
}

// copies counts, for UploadRare, the peers of u that p2p's avail would
// count as holding piece p: the origin if it revealed p to u; an agent
// that held p when the connection began (its bitfield) or got it before u
// did (its Have). An agent that gets p after u does not tell u (p2p
// suppresses Haves to agents holding the piece), so the count stops when
// u gets p (on the model before toldBy, N = 1,000, U = R: counting
// every copy 1.096x / 1.103x, as p2p would 1.102x / 1.114x).
func (s *Sim) copies(u int32, p int) int {
	n := s.nodes[u]
	k := 0
	for ci, x := range n.conns {
		if x == origin {
			if n.revealed.has(p) {
				k++
			}
			continue
		}
		nx := s.nodes[x]
		if nx.have.has(p) && (nx.gotAt[p] <= n.since[ci] || !n.have.has(p) || nx.gotAt[p] < n.gotAt[p]) {
			k++
		}
	}
	return k
}

// toldBy is how many pieces w told u it holds, as p2p's hasN counts them:
// w's bitfield when they connected, then a Have for each piece w got
// while u lacked it (p2p suppresses Haves to agents that hold the piece,
// so w's pieces that u got first are not counted). It ranks the engine's
// upload turns: by what w holds instead, the model's rows with turns were
// +0.02..+0.05 slow of the real swarm (N = 256, 0.125 MB/s: 1.108x
// against 1.061-1.067x); by this, 1.076x.
func (s *Sim) toldBy(u, w int32) int32 {
	n := s.nodes[u]
	if ci := slices.Index(n.conns, w); ci >= 0 && n.toldN != nil {
		return n.toldN[ci]
	}
	return int32(s.nodes[w].nHave) // not connected (tests)
}

// burstOf is a limiter's burst at rate r (p2p NewLimiter: a twentieth of
// a second, at least the library's 64 KiB block).
func burstOf(r float64) float64 { return max(r/20, 64<<10) }

// settleUp and settleDown bring n's limiter tokens up to now: they fill at
// what the link's rate leaves unused, up to the burst. Call them before the
// link's rate in use changes; without bursts they do nothing.
func (s *Sim) settleUp(n *node) {
	if !s.bursts {
		return
	}
	n.upTok = min(burstOf(n.up), n.upTok+max(0, n.up-n.outRate)*(s.now-n.upTokAt))
	n.upTokAt = s.now
}

func (s *Sim) settleDown(n *node) {
	if !s.bursts {
		return
	}
	n.downTok = min(burstOf(n.down), n.downTok+max(0, n.down-n.inRate)*(s.now-n.downTokAt))
	n.downTokAt = s.now
}
