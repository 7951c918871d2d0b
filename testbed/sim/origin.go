package sim

// The origin's super-seeder, as internal/p2p/superseed.Seeder decides:
// each connected peer may be fetching `reveal` revealed pieces at once;
// it is shown first the pieces nobody was shown or holds, lowest index
// first; once every piece is out, a second copy only to a peer starving
// (no piece it lacks is held by any connected peer), of a piece revealed
// at least `patience` ago, one at a time; a new piece goes to a peer
// fetching nothing from the origin while there is one. A piece that went
// out once less than lostAfter ago, whose only holder left before the end
// (churn) with nobody fetching it from the origin, is handed out as new
// lostAfter later. Uploads take turns at the cap in reveal order
// (reshare).

// peerHas: w (connected to the origin) now holds piece p.
func (s *Sim) peerHas(w int32, p int) {
	n := s.nodes[w]
	s.holders[p]++
	s.lostAt[p] = -1
	if n.revealed.has(p) {
		was := s.isOriginIdle(n)
		n.pending--
		s.originIdleChanged(n, was)
	}
	s.fill(w)
}

// isOriginIdle: n is connected to the origin, fetches nothing from it and
// lacks a piece (the seeder's seedConn.idle).
func (s *Sim) isOriginIdle(n *node) bool {
	return n.originConn && n.pending == 0 && n.nHave < s.nPieces
}

// originIdleChanged counts n in s.originIdle as it is now, having been
// was before a change.
func (s *Sim) originIdleChanged(n *node, was bool) {
	if now := s.isOriginIdle(n); now != was {
		if now {
			s.originIdle++
		} else {
			s.originIdle--
		}
	}
}

// fill reveals pieces to w until it has `reveal` to fetch from the origin;
// a second one only if it is new and every other peer fetches one (the
// seeder's fill).
func (s *Sim) fill(w int32) {
	n := s.nodes[w]
	if !n.alive || !n.originConn || n.done {
		return
	}
	revealed := false
	for n.pending < s.cfg.Reveal {
		p, wait := s.originPick(w)
		if p < 0 {
			if wait > 0 && !s.retryQueued {
				s.retryQueued = true
				s.push(event{t: s.now + wait, kind: evRefill})
			}
			break
		}
		if fresh := s.assigned[p] == 0 && s.holders[p] == 0; n.pending > 0 && (!fresh || s.originIdle > 0) {
			break
		}
		if s.lostAt[p] >= 0 {
			s.lostAt[p] = -1
			s.lost++
		}
		n.revealed.set(p)
		was := s.isOriginIdle(n)
		n.pending++
		s.originIdleChanged(n, was)
		s.assigned[p]++
		s.revealedAt[p] = s.now
		s.nReveals++
		s.revealSeq[int64(w)*int64(s.nPieces)+int64(p)] = s.nReveals
		n.avail[p]++
		revealed = true
	}
	if revealed {
		s.schedule(w, origin)
	}
}

// originPick is the seeder's pick: the next piece to reveal to w, or -1
// and how long until a second copy may be shown.
func (s *Sim) originPick(w int32) (int, float64) {
	n := s.nodes[w]
	// A piece nobody was shown or holds, lowest index first.
	for s.fresh < s.availN && (s.assigned[s.fresh] > 0 || s.holders[s.fresh] > 0) {
		s.fresh++
	}
	for p := s.fresh; p < s.availN; p++ {
		if s.assigned[p] == 0 && s.holders[p] == 0 && !n.have.has(p) {
			return p, 0
		}
	}
	// Starving: every piece w lacks is held by no connected peer.
	for p := range s.availN {
		if !n.have.has(p) && s.holders[p] > 0 {
			return -1, 0
		}
	}
	patience := max(1, 2*float64(s.cfg.PieceBytes)*float64(len(s.nodes[origin].conns))/s.cfg.OriginRate)
	best, wait := -1, 0.0
	for p := range s.availN {
		if n.have.has(p) || n.revealed.has(p) {
			continue
		}
		if d := s.revealedAt[p] + patience - s.now; d > 0 {
			if wait == 0 || d < wait {
				wait = d
			}
			continue
		}
		if best < 0 || s.assigned[p] < s.assigned[best] {
			best = p
		}
	}
	if best >= 0 {
		return best, 0
	}
	return -1, wait
}

// lostAfter is how long a piece whose only holder left waits before it is
// handed out again (the seeder's lostAfter): 5 s, or 8 pieces at the
// origin's cap.
func (s *Sim) lostAfter() float64 {
	return max(5, 8*float64(s.cfg.PieceBytes)/s.cfg.OriginRate)
}

// originFetching reports whether an origin-connected peer was shown piece
// p and does not hold it yet.
func (s *Sim) originFetching(p int) bool {
	for _, c := range s.nodes[origin].conns {
		if n := s.nodes[c]; n.revealed.has(p) && !n.have.has(p) {
			return true
		}
	}
	return false
}

// refill gives every connected peer a chance at a reveal, starting at a
// random one (the seeder walks a Go map); a second pass once no peer
// fetches nothing (the seeder's refill).
func (s *Sim) refill() {
	conns := s.nodes[origin].conns
	if len(conns) == 0 {
		return
	}
	k := s.rng.IntN(len(conns))
	for pass := range 2 {
		if pass == 1 && s.originIdle > 0 {
			return
		}
		for i := range conns {
			c := s.nodes[origin].conns
			if len(c) == 0 {
				return
			}
			s.fill(c[(k+i)%len(c)])
		}
	}
}
