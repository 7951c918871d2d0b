package sim

import "slices"

// Agents on Shoal's own engine of live swarms (internal/p2p engine.go,
// transfer.go, peerconn.go; Config.Engine "shoal"), where they differ from
// the library's:
//
//   - connections: dials in the tracker's order (seeds first), while short
//     of conns_per_torrent; the origin's connection is outside that cap; a
//     downloading agent takes up to a third more peers that dial it, and a
//     full one replaces a connection neither side wants anything from for
//     a peer that dials it; a refused dial is retried after redialAfter;
//     once a second a full downloading agent replaces one connection idle
//     both ways for uselessAfter when it knows a peer to dial instead; a
//     complete agent closes its connections to the origin and to other
//     complete agents; nothing is dropped to rebalance directions;
//   - the piece asked for: the in-order prefix's next piece, then pieces
//     begun, then the rarest among the peer's that nobody is fetching, ties
//     broken from a random start;
//   - Haves: none to an agent that holds the piece; to an agent that lacks
//     more than lazyHaveSpare of ours, of a piece another of our agents
//     holds too, and to the origin, of a piece it did not send, the Have
//     waits for the connection's next write (a request or a block), at
//     most HaveDelay, or on a slow link the time lazyHaveSpare pieces take
//     at the agent's upload cap (lazyDelay);
//   - stalls: once a second a downloading agent takes back its requests
//     from a peer (not the origin) that sat on them longer than its stall
//     time (four of its usual gaps between blocks, and eight times a block
//     at the agent's download cap, MinStall to MaxStall), for pieces another
//     connection holds, and asks that peer for nothing more until it sends
//     a block or snubFor passes, unless the agent runs underfed (p2p
//     transfer.tick, moveStalledLocked, fillLocked; KeepSnubs: the engine
//     before). A peer's upload turns serve the peers behind it first, so
//     without this an agent far ahead could wait on a late joiner for as
//     long as the late joiners took (N = 1,000, a quarter late: 7 agents
//     at 1.51x, each waiting 100 s for its last piece);
//   - underfed: once a second an agent whose download, averaged over two
//     ticks, is under underfedBelow of its cap, underfedAfter after it
//     began, keeps twice the requests in flight to its quick peers (those
//     whose gap between blocks is at most the lower median of its agents';
//     p2p transfer.feedLocked, queueDepth). An uploader's turns serve the
//     peer that holds least first, so the second request takes turns from
//     agents ahead; without it a fast agent that drew slow peers for half
//     its connections got too few turns to fill its link.

const (
	redialAfter   = 5.0  // p2p: a candidate's nextTry after a dial
	lazyHaveSpare = 4    // p2p lazyHaveSpare
	maxHaveDelay  = 2.0  // p2p maxHaveDelay, seconds
	uselessAfter  = 10.0 // p2p uselessAfter
	replacedFor   = 30.0 // p2p: a replaced peer's nextTry (snubTimeout)
	snubFor       = 30.0 // p2p snubTimeout: a stalled peer gets no requests
	stallBlocks   = 8    // p2p stallBlocks
	underfedAfter = 3.0  // p2p underfedAfter
	underfedBelow = 0.9  // p2p underfedBelow (0.8 before 2026-12-05, night)
)

// gotBlock updates w's gap average on connection ci (p2p
// peerConn.gotBlock): a block asked for at asked came now.
func (s *Sim) gotBlock(w *node, ci int, asked float64) {
	gap := s.now - max(w.lastBlock[ci], asked)
	if w.blockGap[ci] == 0 {
		w.blockGap[ci] = gap
	} else {
		w.blockGap[ci] = (4*w.blockGap[ci] + gap) / 5
	}
	w.lastBlock[ci] = s.now
	w.snubUntil[ci] = 0
}

// moveStalled takes back a's requests from connections that sat on them
// for longer than their stall time, for pieces another connection holds
// (p2p transfer.tick's stall rule), and reports whether it took any.
func (s *Sim) moveStalled(a int32) bool {
	n := s.nodes[a]
	moved := false
	for ci, v := range n.conns {
		if v == origin {
			continue
		}
		oldest, size := -1.0, int64(0)
		for _, id := range n.downT {
			if tr := &s.xfers[id]; tr.from == v && (oldest < 0 || tr.asked < oldest) {
				oldest, size = tr.asked, tr.bytes
			}
		}
		if oldest < 0 || s.now-max(n.lastBlock[ci], oldest) <= s.stallAfter(n, ci, size) {
			continue
		}
		took := false
		for _, id := range slices.Clone(n.downT) {
			tr := s.xfers[id]
			if tr.from != v || !s.heldElsewhere(a, v, int(tr.piece)) {
				continue
			}
			s.cancelled++
			s.unlink(id)
			n.inflight.clear(int(tr.piece))
			n.asked.clear(int(tr.piece)*s.cpp + int(tr.chunk))
			n.slots[ci]--
			took = true
		}
		if !took {
			continue
		}
		if s.cfg.NoSlowerLast || s.nodes[v].up <= 2*n.up {
			// Not a peer that told an upload cap over twice ours, which
			// serves us after its equals on purpose (p2p's stall rule).
			n.snubUntil[ci] = s.now + snubFor
		}
		s.reshare(v)
		moved = true
	}
	if moved {
		s.reshareInto(a)
		for _, v := range slices.Clone(n.conns) {
			s.schedule(a, v)
		}
	}
	return moved
}

// stallAfter is how long a's connection ci may sit on a request for a
// block of size bytes (p2p peerConn.stallAfter): four of its usual gaps
// between blocks, and stallBlocks times the block at a's download cap,
// MinStall to MaxStall.
func (s *Sim) stallAfter(n *node, ci int, size int64) float64 {
	return min(max(s.cfg.MinStall, 4*n.blockGap[ci], stallBlocks*float64(size)/n.down), s.cfg.MaxStall)
}

// heldElsewhere reports whether a connection of a's other than the one to
// v holds piece p, as a knows it (the origin: what it revealed).
func (s *Sim) heldElsewhere(a, v int32, p int) bool {
	n := s.nodes[a]
	for _, d := range n.conns {
		if d == v {
			continue
		}
		if d == origin {
			if n.revealed.has(p) {
				return true
			}
		} else if ci := slices.Index(s.nodes[d].conns, a); ci >= 0 && s.nodes[d].have.has(p) && !s.nodes[d].untold[ci].has(p) {
			return true
		}
	}
	return false
}

// tick is a downloading agent's once-a-second look at its connections
// (p2p transfer.tick): it replaces one that has been idle both ways for
// uselessAfter while it is full and knows a peer to dial instead.
func (s *Sim) tick(a int32) {
	n := s.nodes[a]
	if !n.alive || n.done {
		return
	}
	s.push(event{t: s.now + 1, kind: evTick, a: a})
	s.moveStalled(a)
	s.feed(a)
	victim := int32(-1)
	for ci, v := range n.conns {
		if v == origin || s.wants(a, v) || s.wants(v, a) {
			n.idleSince[ci] = -1
			continue
		}
		if n.idleSince[ci] < 0 {
			n.idleSince[ci] = s.now
		}
		if victim < 0 && s.now-n.idleSince[ci] > uselessAfter {
			victim = v
		}
	}
	if victim < 0 || s.capped(a) < n.maxConns || len(n.pool) == 0 {
		return
	}
	s.dropConn(a, victim)
	n.pool = slices.DeleteFunc(n.pool, func(v int32) bool { return v == victim }) // someone else first
	s.push(event{t: s.now + replacedFor, kind: evRedial, a: a, b: victim})
	s.dial(a)
}

// feed updates whether a is underfed and which of its connections are
// quick (p2p transfer.feedLocked), and asks more of them when it turns
// underfed.
func (s *Sim) feed(a int32) {
	n := s.nodes[a]
	if s.cfg.NoUnderfed {
		return
	}
	got := n.fromOrigin + n.fromPeers
	n.downRate = (n.downRate + float64(got-n.downSeen)) / 2
	n.downSeen = got
	underfed := s.now-n.start > underfedAfter && n.downRate < underfedBelow*n.down
	gaps := s.gaps[:0]
	for ci, v := range n.conns {
		if v != origin && n.blockGap[ci] > 0 {
			gaps = append(gaps, n.blockGap[ci])
		}
	}
	slices.Sort(gaps)
	s.gaps = gaps
	for ci, v := range n.conns {
		n.quick[ci] = v != origin && n.blockGap[ci] > 0 && len(gaps) > 1 && n.blockGap[ci] <= gaps[(len(gaps)-1)/2]
	}
	if underfed == n.underfed {
		return
	}
	n.underfed = underfed
	if underfed {
		for _, v := range slices.Clone(n.conns) {
			s.schedule(a, v)
		}
	}
}

// queueDepth is the requests n keeps in flight on connection ci (p2p
// transfer.queueDepth): its queue, or twice that to a quick peer while it
// is underfed, unless the queue was set by hand.
func (s *Sim) queueDepth(n *node, ci int) int {
	if n.underfed && n.quick[ci] && s.cfg.QueueDepth == 0 {
		return min(2*n.queue, 255) // slots are bytes
	}
	return n.queue
}

// capped counts a's connections that conns_per_torrent caps.
func (s *Sim) capped(a int32) int {
	n := s.nodes[a]
	if n.originConn {
		return len(n.conns) - 1
	}
	return len(n.conns)
}

// dialEngine dials a's candidates in the tracker's order while a is short
// of connections, and the origin whenever a has no connection to it.
func (s *Sim) dialEngine(a int32) {
	n := s.nodes[a]
	if n.done || !n.alive {
		return
	}
	for i := 0; i < len(n.pool); {
		b := n.pool[i]
		switch {
		case slices.Contains(n.conns, b):
			n.pool = slices.Delete(n.pool, i, i+1)
			continue
		case b == origin:
			if n.dialingOrigin {
				i++
				continue
			}
			n.dialingOrigin = true
		case s.capped(a)+n.halfOpen >= n.maxConns:
			if n.originConn || n.dialingOrigin {
				return
			}
			i++
			continue
		default:
			n.halfOpen++
		}
		n.pool = slices.Delete(n.pool, i, i+1)
		s.push(event{t: s.now + 1.5*s.cfg.RTT + 1e-6*s.rng.Float64(), kind: evConnect, a: a, b: b})
	}
}

// redial puts b back among a's candidates (a dial it refused).
func (s *Sim) redial(a, b int32) {
	n := s.nodes[a]
	if !n.alive || n.done || slices.Contains(n.conns, b) || slices.Contains(n.pool, b) {
		return
	}
	n.pool = append(n.pool, b)
	s.dial(a)
}

// roomEngine reports whether a takes one more connection (it dialled, or
// was dialled), replacing a connection neither side wants anything from
// for a peer that dialled it.
func (s *Sim) roomEngine(a int32, outgoing bool) bool {
	n := s.nodes[a]
	limit := n.maxConns
	if !outgoing && !n.done {
		limit += max(1, n.maxConns/3) // p2p incomingSlack
	}
	if s.capped(a) < limit {
		return true
	}
	if outgoing {
		return false
	}
	for _, v := range n.conns {
		if v != origin && !s.wants(a, v) && !s.wants(v, a) {
			s.dropConn(a, v)
			return true
		}
	}
	return false
}

// wants reports whether x lacks a piece y holds.
func (s *Sim) wants(x, y int32) bool {
	nx := s.nodes[x]
	return !nx.done && anyNotIn(s.nodes[y].have, nx.have)
}

// chooseEngine is the piece w asks v for next (p2p transfer.pickLocked),
// or -1.
func (s *Sim) chooseEngine(w, v int32) int {
	n := s.nodes[w]
	src := s.nodes[v].have
	if v == origin {
		src = n.revealed
	}
	if p := n.prefix; p < s.nPieces && src.has(p) && !n.have.has(p) && !n.inflight.has(p) {
		return p
	}
	best := -1
	if s.cpp > 1 {
		each(src, n.have, n.inflight, func(p int) bool {
			if n.begun.has(p) {
				best = p
			}
			return best < 0
		})
		if best >= 0 {
			return best
		}
	}
	start := s.rng.IntN(s.nPieces)
	bestA, bestD := 256, 0
	each(src, n.have, n.inflight, func(p int) bool {
		a, d := int(n.avail[p]), p-start
		if d < 0 {
			d += s.nPieces
		}
		if a < bestA || a == bestA && d < bestD {
			best, bestA, bestD = p, a, d
		}
		return true
	})
	return best
}

// haveEngine: w verified piece p; its peers are told as the engine tells
// them (transfer.check, haveMayWaitLocked).
func (s *Sim) haveEngine(w int32, p int) {
	n := s.nodes[w]
	for n.prefix < s.nPieces && n.have.has(n.prefix) {
		n.prefix++
	}
	holders := 0 // our agents that hold p (the sender among them)
	for _, v := range n.conns {
		if v != origin && s.nodes[v].have.has(p) {
			holders++
		}
	}
	for ci, v := range n.conns {
		switch {
		case v == origin:
			if n.viaOrigin.has(p) {
				s.peerHas(w, p) // its next reveal to w waits on this Have
			} else {
				s.lazyHave(w, ci, p)
			}
		case s.nodes[v].have.has(p):
			// No Have; counted all the same, as dropConn uncounts it.
			s.nodes[v].avail[p]++
		case holders > 1 && moreNotIn(n.have, s.nodes[v].have, lazyHaveSpare):
			s.lazyHave(w, ci, p)
		default:
			s.tell(w, v, p)
		}
	}
	if n.done {
		// Two seeds have nothing to trade.
		for _, v := range slices.Clone(n.conns) {
			if v == origin || s.nodes[v].done {
				s.dropConn(w, v)
			}
		}
	}
}

// lazyHave queues the Have of p on w's ci-th connection, due at most
// lazyDelay from the first one queued.
func (s *Sim) lazyHave(w int32, ci, p int) {
	n := s.nodes[w]
	n.untold[ci].set(p)
	if n.lazyAt[ci] == 0 {
		n.lazyAt[ci] = s.now + s.lazyDelay(n)
		s.push(event{t: n.lazyAt[ci], kind: evHaves, a: w, b: n.conns[ci]})
	}
}

// lazyDelay is how long n's lazy Haves may wait (p2p's lazyDelay):
// HaveDelay, or the time lazyHaveSpare pieces take at n's upload cap, at
// most maxHaveDelay.
func (s *Sim) lazyDelay(n *node) float64 {
	if n.up <= 0 {
		return s.cfg.HaveDelay
	}
	return min(max(s.cfg.HaveDelay, float64(lazyHaveSpare*s.cfg.PieceBytes)/n.up), maxHaveDelay)
}

// lazyDue sends w's lazy Haves to v whose time has come.
func (s *Sim) lazyDue(w, v int32) {
	n := s.nodes[w]
	if ci := slices.Index(n.conns, v); ci >= 0 && n.lazyAt[ci] != 0 && s.now >= n.lazyAt[ci] {
		s.flushHaves(w, ci)
	}
}

// flushHaves sends w's lazy Haves on its ci-th connection.
func (s *Sim) flushHaves(w int32, ci int) {
	n := s.nodes[w]
	if ci < 0 || n.lazyAt[ci] == 0 {
		return
	}
	n.lazyAt[ci] = 0
	v := n.conns[ci]
	// Telling may ask for blocks, whose requests flush again: send a copy.
	untold := slices.Clone(n.untold[ci])
	clear(n.untold[ci])
	eachSet(untold, func(p int) { s.tell(w, v, p) })
}

// tell: v learns that w holds piece p.
func (s *Sim) tell(w, v int32, p int) {
	if v == origin {
		s.peerHas(w, p)
		return
	}
	nv := s.nodes[v]
	nv.avail[p]++
	if nv.toldN != nil { // the engine's model: what w told v (toldBy)
		if ci := slices.Index(nv.conns, w); ci >= 0 {
			nv.toldN[ci]++
		}
	}
	if !nv.have.has(p) && !nv.inflight.has(p) {
		s.schedule(v, w)
	}
}
