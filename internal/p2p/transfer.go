package p2p

import (
	"context"
	"crypto/sha1"
	"errors"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
	"golang.org/x/time/rate"
)

// A transfer is one blob's live swarm on the engine (engine.go): which
// pieces this node holds, which its peers hold, and the block requests in
// flight. Its work is per event and bounded by what the event touches: a
// block received frees one request slot, which is refilled by one scan of
// the pieces that peer holds and this node lacks (64 pieces a machine word);
// a piece verified is announced only to the peers that lack it; nothing is
// recomputed on a timer. One lock (mu) guards it all; the sockets, the disk
// and the hashing are worked outside it.
type transfer struct {
	e      *engine
	mi     *MetaInfo
	st     *blobStorage
	n      int
	plen   int64
	blocks int // blocks in a whole piece
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed once every piece is verified

	up, down atomic.Int64 // piece bytes sent, and useful bytes received

	mu                      sync.Mutex
	have                    bitset
	haveN                   int
	avail                   []int32          // connected peers holding each piece
	touched                 bitset           // pieces in pieces
	failed                  bitset           // pieces that failed their hash (fetched solo)
	pieces                  map[int]*partial // pieces with blocks requested or in
	raised                  []int            // pieces a reader waits for (want), first asked
	conns                   map[*peerConn]struct{}
	peers                   map[netip.AddrPort]*candidate
	order                   []netip.AddrPort // peers' keys, in the order the tracker listed them
	dialing, dialingOrigins int
	closed                  bool
	rnd                     *rand.Rand
	since                   time.Time
	// underfed: the download ran under underfedBelow of the node's cap
	// (a moving average of the ticks' rates, downRate; downSeen is down at
	// the last tick), so the quicker half of the connections get twice
	// the requests (queueDepth).
	underfed bool
	downRate float64
	downSeen int64
}

// partial is a piece being fetched.
type partial struct {
	got     []bool
	gotN    int
	written int     // blocks on disk; the piece is checked when all are
	reqs    []uint8 // requests in flight per block
	from    map[netip.Addr]bool
	// solo: the piece failed its hash before, so it is fetched from one
	// peer (owner) only: a liar is then alone to blame and banned, and one
	// that mixes its bad blocks with good ones cannot fail it for ever.
	solo  bool
	owner *peerConn
}

// candidate is a peer the tracker listed.
type candidate struct {
	id      [20]byte
	nextTry time.Time
	fails   int
}

// blockReq is a request in flight.
type blockReq struct {
	piece, block int
	at           time.Time
}

func newTransfer(e *engine, mi *MetaInfo, st *blobStorage) *transfer {
	n := mi.Info.NumPieces()
	ctx, cancel := context.WithCancel(e.ctx)
	t := &transfer{e: e, mi: mi, st: st, n: n, plen: mi.Info.PieceLength, ctx: ctx, cancel: cancel, done: make(chan struct{}), since: time.Now(),
		have: newBitset(n), failed: newBitset(n), avail: make([]int32, n), touched: newBitset(n), pieces: map[int]*partial{},
		conns: map[*peerConn]struct{}{}, peers: map[netip.AddrPort]*candidate{}, rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	t.blocks = int((t.plen + blockSize - 1) / blockSize)
	st.mu.Lock()
	for i, ok := range st.complete {
		if ok {
			t.have.set(i)
			t.haveN++
		}
	}
	st.mu.Unlock()
	if t.haveN == n {
		close(t.done)
	}
	return t
}

// blockSize is the block the engine asks a peer for at a time: the largest
// an origin's seeder and the engine serve (maxBlock). Every block is a
// request, a message and a wake-up at both ends: against 64 KiB, 35 % fewer
// system calls and 8-18 % less CPU where pieces are 128 KiB and up (blobs of
// 64 MiB and up; 64-256 agents, 128 KiB pieces: 4.5-5.7 -> 3.9-4.8 core-s
// per GiB), as fast (bench/scale/levers/engine/block128).
const blockSize = maxBlock

func (t *transfer) pieceLen(i int) int64 { return min(t.plen, t.mi.Info.Length-int64(i)*t.plen) }

func (t *transfer) blocksIn(i int) int { return int((t.pieceLen(i) + blockSize - 1) / blockSize) }

func (t *transfer) blockLen(i, b int) int64 {
	return min(blockSize, t.pieceLen(i)-int64(b)*blockSize)
}

func (t *transfer) complete() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

func (t *transfer) bytesCompleted() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := int64(t.haveN) * t.plen
	if t.have.get(t.n - 1) {
		b -= t.plen - t.pieceLen(t.n-1)
	}
	return b
}

func (t *transfer) numConns() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// queueDepth is the requests kept in flight to c: requests_per_peer, or
// twice that to a quick peer while the transfer is underfed. With one
// request in flight a peer sends us a block per turn of its upload at
// most, and a fast agent that drew slow peers for half its connections
// (a quarter of the agents at R/4, six connections) got too few turns
// from the others to fill its link: 64 agents, warm, U = 10 R, the
// slowest at 1.23-1.57x of its bound while the median was 1.02x; with
// this 1.15-1.33x. The uploader's turns serve the peer that holds least
// first, so a second request to a quick peer takes turns from agents
// ahead of us; to a slow peer it would only queue. Set by hand,
// requests_per_peer is kept as set.
func (t *transfer) queueDepth(c *peerConn) int {
	q := t.e.cfg.requestsPerPeer()
	switch {
	case q <= 0:
		return defaultQueueDepth
	case t.underfed && c.quick && t.e.cfg.RequestsPerPeer == 0:
		return 2 * q
	}
	return q
}

// underfedBelow is the fraction of the download cap under which a
// transfer is underfed, once underfedAfter passed since it began (every
// transfer starts slow). At 0.85 on every connection, 64 agents with a
// quarter at R/4 at U = R took 1.10-1.13x at the median against
// 1.09-1.10x without (the underfed took turns the median agents needed:
// the row has 2 % of spare upload); at 0.8 on the quicker half, the same.
// At 0.8 a fast agent that drew three slow peers of six ran at 0.82-0.90
// of its cap from start to end, underfed for a tick at most, and ended
// 1.13-1.23x of its bound (warm, U = 10 R); at 0.9, 1.07-1.12x, the
// median as before.
const underfedBelow = 0.9

var underfedAfter = 3 * time.Second // a variable for tests

// feedLocked updates underfed from the bytes received since the last
// tick, and which connections are quick: the faster half of those to
// agents by their gaps between blocks (none with one such connection).
// t.mu is held.
func (t *transfer) feedLocked(now time.Time) {
	down := t.e.down
	if down == nil || down.Limit() == rate.Inf || down.Limit() <= 0 || t.haveN == t.n {
		t.underfed = false
		return
	}
	d := t.down.Load()
	t.downRate = (t.downRate + float64(d-t.downSeen)) / 2 // per tick of a second
	t.downSeen = d
	underfed := now.Sub(t.since) > underfedAfter && t.downRate < underfedBelow*float64(down.Limit())
	gaps := make([]time.Duration, 0, len(t.conns))
	for c := range t.conns {
		if !c.origin && c.blockGap > 0 {
			gaps = append(gaps, c.blockGap)
		}
	}
	slices.Sort(gaps)
	for c := range t.conns {
		c.quick = !c.origin && c.blockGap > 0 && len(gaps) > 1 && c.blockGap <= gaps[(len(gaps)-1)/2]
	}
	if underfed != t.underfed {
		t.underfed = underfed
		if underfed {
			t.fillAllLocked()
		}
	}
}

// defaultQueueDepth: without a download cap to size it from, 512 KiB in
// flight per peer, about a 4 ms round trip at 1 Gbit/s on each of 6 peers.
const defaultQueueDepth = 512 << 10 / blockSize

// raise makes pieces [first, last] the first asked for (a reader waits for
// them far ahead of the in-order prefix).
func (t *transfer) raise(first, last int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.raised = t.raised[:0]
	for i := first; i <= last && i < t.n; i++ {
		if !t.have.get(i) {
			t.raised = append(t.raised, i)
		}
	}
	for c := range t.conns {
		t.fillLocked(c)
	}
}

// fillLocked sends c requests up to its queue depth. A connection already
// dropped gets none: nobody would ever take them back. A snubbed peer gets
// none while the other peers fill our link; once they do not (underfed) it
// is asked again, and snubbed again if it still sits on the requests. The
// snub is mostly of a peer that made us wait our turn at its upload (it
// serves the peers behind it first), not a dead one: at N = 128, 16 MiB,
// warm U = R, 30-40 % of the agents' connections were snubbed by the end of
// a run, and the slowest agents, with 4 or 5 of their 7 peers snubbed, ran
// under their cap for 10 s (1.10-1.31x where the median took 1.05x).
func (t *transfer) fillLocked(c *peerConn) {
	if c.closed || c.choked || t.closed || t.haveN == t.n || (!t.underfed && !c.snubbedUntil.IsZero() && time.Now().Before(c.snubbedUntil)) {
		return
	}
	q := t.queueDepth(c)
	for len(c.reqs) < q {
		i, b, ok := t.pickLocked(c)
		if !ok {
			return
		}
		p := t.partialLocked(i)
		if p.solo && p.owner == nil {
			p.owner = c
		}
		p.reqs[b]++
		c.reqs = append(c.reqs, blockReq{piece: i, block: b, at: time.Now()})
		c.queue(pp.Message{Type: pp.Request, Index: pp.Integer(i), Begin: pp.Integer(int64(b) * blockSize), Length: pp.Integer(t.blockLen(i, b))})
	}
}

func (t *transfer) partialLocked(i int) *partial {
	p := t.pieces[i]
	if p == nil {
		nb := t.blocksIn(i)
		p = &partial{got: make([]bool, nb), reqs: make([]uint8, nb), solo: t.failed.get(i)}
		t.pieces[i] = p
		t.touched.set(i)
	}
	return p
}

// pickLocked chooses the next block to ask c for: first the in-order
// prefix's next piece (what a streaming client reads next) and pieces a
// reader raised, then blocks of pieces already begun, then the rarest piece
// among c's that nobody is fetching (ties broken from a random start, so
// that peers starting together spread out), and last, when every missing
// piece is being fetched, a second request for a block already asked of
// another peer (the end game).
func (t *transfer) pickLocked(c *peerConn) (piece, block int, ok bool) {
	free := func(i int) (int, bool) {
		p := t.pieces[i]
		if p == nil {
			return 0, true
		}
		if p.solo && p.owner != nil && p.owner != c {
			return 0, false
		}
		for b := range p.got {
			if !p.got[b] && p.reqs[b] == 0 {
				return b, true
			}
		}
		return 0, false
	}
	if next := t.st.prefixPieces(); next < t.n && !t.have.get(next) && c.has.get(next) {
		if b, ok := free(next); ok {
			return next, b, true
		}
	}
	for _, i := range t.raised {
		if !t.have.get(i) && c.has.get(i) {
			if b, ok := free(i); ok {
				return i, b, true
			}
		}
	}
	for i, p := range t.pieces {
		if p.gotN < len(p.got) && c.has.get(i) {
			if b, ok := free(i); ok {
				return i, b, true
			}
		}
	}
	// The rarest untouched piece c holds.
	words := len(c.has)
	start := t.rnd.IntN(words)
	best, bestAvail := -1, int32(0)
	for k := range words {
		w := (start + k) % words
		bitsLeft := c.has[w] &^ t.have[w] &^ t.touched[w]
		for bitsLeft != 0 {
			j := bits.TrailingZeros64(bitsLeft)
			bitsLeft &^= 1 << j
			i := w*64 + j
			if i >= t.n {
				break
			}
			if a := t.avail[i]; best < 0 || a < bestAvail {
				best, bestAvail = i, a
			}
		}
	}
	if best >= 0 {
		return best, 0, true
	}
	if t.haveN+len(t.pieces) < t.n {
		return 0, 0, false // pieces c lacks are still to be had elsewhere
	}
	// End game: the oldest single request for a block c can also send.
	var oldest time.Time
	for d := range t.conns {
		if d == c {
			continue
		}
		for _, r := range d.reqs {
			p := t.pieces[r.piece]
			if p == nil || p.solo || p.got[r.block] || p.reqs[r.block] > 1 || !c.has.get(r.piece) || c.requested(r.piece, r.block) {
				continue
			}
			if !ok || r.at.Before(oldest) {
				piece, block, oldest, ok = r.piece, r.block, r.at, true
			}
		}
	}
	return piece, block, ok
}

// peerHasLocked records that c holds piece i.
func (t *transfer) peerHasLocked(c *peerConn, i int) {
	if c.has.get(i) {
		return
	}
	c.has.set(i)
	c.hasN.Add(1)
	t.avail[i]++
	if !t.have.get(i) && !c.interested {
		c.interested = true
		c.setInterest(true)
	}
}

// received handles block data from c; data is the caller's until it
// returns.
func (t *transfer) received(c *peerConn, i int, begin int64, data []byte) {
	size := int64(len(data))
	b := int(begin / blockSize)
	t.mu.Lock()
	if k := slices.IndexFunc(c.reqs, func(r blockReq) bool { return r.piece == i && r.block == b }); k >= 0 {
		c.gotBlock(time.Now(), c.reqs[k].at)
		c.reqs = slices.Delete(c.reqs, k, k+1)
		if p := t.pieces[i]; p != nil {
			p.reqs[b]--
		}
	}
	p := t.pieces[i]
	if t.closed || p == nil || begin%blockSize != 0 || b >= len(p.got) || p.got[b] || size != t.blockLen(i, b) {
		t.fillLocked(c)
		t.mu.Unlock()
		t.e.wasted.Add(size)
		return
	}
	p.got[b] = true
	p.gotN++
	multi := len(p.got) > 1
	if p.from == nil {
		p.from = map[netip.Addr]bool{}
	}
	p.from[c.addr.Addr()] = true
	// Another peer asked for the same block (end game): take it back.
	if p.reqs[b] > 0 {
		for d := range t.conns {
			if d != c && d.dropRequest(i, b) {
				p.reqs[b]--
				d.queue(pp.Message{Type: pp.Cancel, Index: pp.Integer(i), Begin: pp.Integer(begin), Length: pp.Integer(size)})
				t.fillLocked(d)
			}
		}
	}
	t.fillLocked(c)
	t.mu.Unlock()

	if c.origin {
		t.e.n.fromOrigins.Add(size)
	} else {
		t.e.n.fromPeers.Add(size)
	}
	t.down.Add(size)
	if multi {
		// A piece of several blocks may come from several peers: blame
		// fingerprints each block to find a liar once the piece verifies.
		// A piece of one block comes from one peer, banned alone if it
		// fails (checked): no fingerprint, which cost 5 % of a swarm's CPU
		// on 128 KiB pieces (a pass over every byte).
		t.st.blame.received(i, begin, c.addr.Addr(), data)
	}
	if _, err := t.st.dl.WriteAt(data, int64(i)*t.plen+begin); err != nil {
		t.e.log.Warn("write block", "digest", t.mi.Digest, "piece", i, "err", err)
		t.failPiece(i, nil)
		return
	}
	t.mu.Lock()
	p.written++
	whole := p.written == len(p.got) && t.pieces[i] == p
	t.mu.Unlock()
	if !whole {
		return
	}
	if multi {
		data = nil // only a block of it in hand: read it back
	}
	if t.st.hashes.Kind() == HashChain {
		t.checkChain(i, data, p)
		return
	}
	var sum [sha1.Size]byte
	if data != nil {
		sum = sha1.Sum(data) // the whole piece is in hand: no reading it back
	} else if !t.readBackSum(i, &sum) {
		return
	}
	t.check(i, sum, p)
}

// checkChain checks piece i (data, or read back from disk if nil) along
// the blob's sha256 chain (HashChain), waiting (off this goroutine) for its
// entry if the origin has not published it yet.
func (t *transfer) checkChain(i int, data []byte, p *partial) {
	hs := t.st.hashes
	verify := func() {
		var ok bool
		var err error
		if data != nil {
			ok, err = hs.CheckChain(t.ctx, t.mi.Digest, i, data)
		} else {
			ok, err = t.st.checkChainFromDisk(t.ctx, t.mi.Digest, i)
		}
		if err != nil {
			// Nobody to blame: fetched again, and a swarm that cannot
			// verify anything stalls into the HTTP fallback.
			if !errors.Is(err, ErrPieceHashes) && t.ctx.Err() == nil {
				t.e.log.Warn("check piece", "digest", t.mi.Digest, "piece", i, "err", err)
			}
			t.failPiece(i, p)
			return
		}
		t.checked(i, ok, p)
	}
	if known, _, _ := hs.State(); known > i {
		verify()
		return
	}
	data = nil // the caller's buffer: read the piece back once its entry is known
	t.wg.Go(func() {
		if _, err := hs.Entry(t.ctx, i); err != nil {
			t.failPiece(i, p)
			return
		}
		verify()
	})
}

// readBackSum hashes piece i from disk.
func (t *transfer) readBackSum(i int, sum *[sha1.Size]byte) bool {
	var err error
	if *sum, err = t.st.pieceSum(int64(i)*t.plen, t.pieceLen(i)); err != nil {
		t.e.log.Warn("read piece back", "digest", t.mi.Digest, "piece", i, "err", err)
		t.failPiece(i, nil)
		return false
	}
	return true
}

// check compares piece i's sum with its hash, waiting for the hash (off this
// goroutine) if the origin has not published it yet.
func (t *transfer) check(i int, sum [sha1.Size]byte, p *partial) {
	if known, _, _ := t.st.hashes.State(); known > i {
		want, _ := t.st.hashes.Wait(t.ctx, i)
		t.checked(i, sum == want, p)
		return
	}
	t.wg.Go(func() {
		want, err := t.st.hashes.Wait(t.ctx, i)
		if err != nil {
			// Nobody to blame: fetched again, and a swarm that cannot
			// verify anything stalls into the HTTP fallback.
			t.failPiece(i, p)
			return
		}
		t.checked(i, sum == want, p)
	})
}

func (t *transfer) checked(i int, ok bool, p *partial) {
	st := t.st
	if !ok {
		// No suspect here: the engine refetches a failed piece from one
		// peer alone, which finds a liar by itself.
		bad, _ := st.blame.hashFailed(i, nil)
		t.mu.Lock()
		if len(bad) == 0 && len(p.from) == 1 {
			// This attempt came from one peer alone (a solo refetch), but a
			// late block of the earlier attempt made blame count two.
			for a := range p.from {
				bad = append(bad, a)
			}
		}
		t.mu.Unlock()
		if len(bad) > 0 {
			st.judge.ban(bad)
		}
		t.e.log.Warn("piece failed its hash", "digest", t.mi.Digest, "piece", i)
		t.mu.Lock()
		t.failed.set(i)
		t.mu.Unlock()
		t.failPiece(i, p)
		return
	}
	if bad := st.blame.verified(i, func(b []byte, off int64) error {
		_, err := st.ReadAt(b, int64(i)*t.plen+off)
		return err
	}); len(bad) > 0 {
		st.judge.ban(bad)
	}
	t.mu.Lock()
	if t.closed || t.pieces[i] != p {
		t.mu.Unlock()
		return
	}
	delete(t.pieces, i)
	t.touched.clear(i)
	t.failed.clear(i)
	t.have.set(i)
	t.haveN++
	holders := 0
	for c := range t.conns {
		if c.agent && c.has.get(i) {
			holders++
		}
	}
	for c := range t.conns {
		// Haves are suppressed to agents that hold the piece (they only
		// tell a peer what it could ask for), never to origins, whose
		// super-seeding counts the copies that arrived.
		switch {
		case c.agent && c.has.get(i):
		case t.haveMayWaitLocked(c, p, holders <= 1):
			c.queueLazy(pp.Message{Type: pp.Have, Index: pp.Integer(i)})
		default:
			c.queue(pp.Message{Type: pp.Have, Index: pp.Integer(i)})
		}
		if c.interested && !c.has.anyNotIn(t.have) {
			c.interested = false
			c.setInterest(false)
		}
	}
	finished := t.haveN == t.n
	t.mu.Unlock()
	if err := st.markComplete(i); err != nil {
		t.e.log.Warn("blob", "digest", t.mi.Digest, "err", err)
	}
	if finished {
		close(t.done)
		t.e.kick(t) // drop connections to other complete peers
	}
}

// haveMayWaitLocked reports whether the Have of p, just verified (and in
// t.have), may wait for c's next write (queueLazy). A fresh piece (held by
// at most one of our agents, the one that sent it) is news at once: the
// swarm's spread of new pieces waits on it (N = 64 at 1 MB/s: 1.104x and
// 1.125x when it waited too, 1.060-1.070x when not). Otherwise an agent
// with other pieces of ours to ask for meanwhile misses nothing. An origin
// only counts the copy, unless it sent the piece: its next reveal to us
// waits on that Have. Anyone else (a plain client) is told at once. t.mu
// is held.
func (t *transfer) haveMayWaitLocked(c *peerConn, p *partial, fresh bool) bool {
	switch {
	case c.agent:
		if !fresh && t.have.countNotIn(c.has, lazyHaveSpare+1) > lazyHaveSpare {
			return true
		}
		c.wmu.Lock()
		defer c.wmu.Unlock()
		return c.writesSoonLocked()
	case c.origin:
		return !p.from[c.addr.Addr()]
	}
	return false
}

// lazyHaveSpare is how many other pieces of ours an agent must lack for a
// Have to it to wait.
const lazyHaveSpare = 4

// failPiece forgets piece i's blocks and requests so that it is fetched
// anew (a block still on its way is taken if the new fetch lacks it).
func (t *transfer) failPiece(i int, p *partial) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.pieces[i]
	if q == nil || (p != nil && q != p) {
		return
	}
	t.e.wasted.Add(int64(q.gotN) * blockSize)
	delete(t.pieces, i)
	t.touched.clear(i)
	for c := range t.conns {
		for _, r := range c.reqs {
			if r.piece == i {
				c.queue(pp.Message{Type: pp.Cancel, Index: pp.Integer(i), Begin: pp.Integer(int64(r.block) * blockSize), Length: pp.Integer(t.blockLen(i, r.block))})
			}
		}
		c.reqs = slices.DeleteFunc(c.reqs, func(r blockReq) bool { return r.piece == i })
	}
	for c := range t.conns {
		t.fillLocked(c)
	}
}

// returnRequestsLocked drops c's requests (it choked us, or left).
func (t *transfer) returnRequestsLocked(c *peerConn) {
	for _, r := range c.reqs {
		if p := t.pieces[r.piece]; p != nil {
			if p.owner == c {
				p.owner = nil
			}
			p.reqs[r.block]--
			if p.gotN == 0 && !slices.ContainsFunc(p.reqs, func(n uint8) bool { return n > 0 }) {
				delete(t.pieces, r.piece)
				t.touched.clear(r.piece)
			}
		}
	}
	c.reqs = c.reqs[:0]
}
