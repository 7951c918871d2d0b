// Package superseed is the origins' BitTorrent side: a seed-only peer on
// the wire protocol that super-seeds (after BEP 16), so that each piece
// leaves the origin about once. Agents use internal/p2p's node instead.
package superseed

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/anacrolix/torrent/tracker/shared"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/p2p/wire"
	"github.com/shoal-dev/shoal/internal/turn"
)

// Seeder is the origin's BitTorrent side: a seed-only peer written on the
// wire protocol so that it can choose what it uploads. anacrolix/torrent has
// no upload-side hook, and a plain seeder answers whatever is asked: agents
// that start together all ask it for the same low-index pieces and it sends
// each of them many times. The Seeder super-seeds (after BEP 16): it reveals
// to each peer only a few pieces, choosing those it has handed out least and
// the swarm holds least, so each piece leaves the origin about once and the
// agents trade the rest among themselves.
type Seeder struct {
	cfg     p2p.Config
	log     *slog.Logger
	ln      net.Listener
	addr    netip.AddrPort
	peerID  [20]byte
	limiter *rate.Limiter
	tracker *p2p.TrackerClient
	sent    atomic.Int64
	lost    atomic.Int64 // pieces handed out again after their only holder left
	// reveal is how many revealed-but-not-yet-held pieces a peer may have.
	reveal int
	now    func() time.Time

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	torrents map[metainfo.Hash]*seedTorrent
	closed   bool // Close began: Seed starts nothing that Close would not wait for
}

// ErrClosed is Seed's error once the seeder is closing: an origin that
// stops while a fetch ends does not seed what that fetch committed.
var ErrClosed = errors.New("superseed: seeder closed")

// NewSeeder listens on cfg.Listen; peers are told about it by the trackers.
func NewSeeder(cfg p2p.Config, log *slog.Logger, reg prometheus.Registerer) (*Seeder, error) {
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p listen %q: %w", cfg.Listen, err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p listen %s: %w", cfg.Listen, err)
	}
	s := &Seeder{cfg: cfg, log: log.With("component", "seeder"), ln: ln, reveal: 2, now: time.Now,
		torrents: map[metainfo.Hash]*seedTorrent{}}
	s.addr = netip.AddrPortFrom(ap.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port))
	copy(s.peerID[:], p2p.OriginPeerIDPrefix)
	if _, err := rand.Read(s.peerID[8:]); err != nil {
		ln.Close()
		return nil, err
	}
	if cfg.UploadRate > 0 {
		s.limiter = p2p.NewLimiter(cfg.UploadRate)
	}
	s.tracker = p2p.NewTrackerClient(cfg.Trackers, ap.Addr(), cfg.TLS)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if reg != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_sent_bytes_total",
			Help: "Piece bytes sent over BitTorrent."}, func() float64 { return float64(s.sent.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_pieces_lost_total",
				Help: "Pieces handed out again because the only peer known to hold them left before passing them on."},
				func() float64 { return float64(s.lost.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_p2p_swarms", Help: p2p.SwarmsHelp},
				func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.torrents)) }))
	}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// Addr is where peers reach the seeder.
func (s *Seeder) Addr() netip.AddrPort { return s.addr }

// BytesSent counts piece data uploaded.
func (s *Seeder) BytesSent() int64 { return s.sent.Load() }

// PiecesLost counts pieces handed out again because the only peer known to
// hold them left without passing them on (see seedTorrent.drop).
func (s *Seeder) PiecesLost() int64 { return s.lost.Load() }

// Seeding reports whether blob mi is being seeded.
func (s *Seeder) Seeding(ih metainfo.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.torrents[ih]
	return ok
}

// Seed starts seeding blob r described by mi and announces it. hashes tells
// which pieces r holds: nil for a whole, verified blob; a growing list while
// the blob arrives from upstream, each piece revealed once hashed (the
// peers' own digest check covers the rest). onClose runs when the seed is
// dropped (at Close).
func (s *Seeder) Seed(mi *p2p.MetaInfo, r io.ReaderAt, hashes *p2p.PieceHashes, onClose func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if _, ok := s.torrents[mi.InfoHash]; ok {
		return p2p.ErrInSwarm
	}
	n := mi.Info.NumPieces()
	ctx, cancel := context.WithCancel(s.ctx)
	t := &seedTorrent{s: s, mi: mi, r: r, onClose: onClose, ctx: ctx, cancel: cancel, assigned: make([]int32, n), holders: make([]int32, n), revealedAt: make([]time.Time, n),
		lostAt: make([]time.Time, n), conns: map[*seedConn]struct{}{}, avail: n}
	if hashes != nil {
		if hashes.NumPieces() != n {
			cancel()
			return fmt.Errorf("seed %s: %d piece hashes for %d pieces", mi.Digest, hashes.NumPieces(), n)
		}
		t.avail, _, _ = hashes.State()
		if t.avail < n {
			s.wg.Go(func() { t.follow(hashes) })
		}
	}
	s.torrents[mi.InfoHash] = t
	s.wg.Go(func() { s.announceLoop(ctx, mi) })
	return nil
}

// follow reveals pieces as their hashes come in (the blob is still arriving).
func (t *seedTorrent) follow(hashes *p2p.PieceHashes) {
	for {
		known, err, changed := hashes.State()
		t.mu.Lock()
		grew := known > t.avail
		t.avail = max(t.avail, known)
		t.mu.Unlock()
		if grew {
			t.refill()
		}
		if known == len(t.assigned) || err != nil {
			return // complete, or failed (the origin drops the seed)
		}
		select {
		case <-changed:
		case <-t.ctx.Done():
			return
		}
	}
}

// Drop stops seeding one blob (evicted from the store, say): its peers are
// disconnected, the tracker hears "stopped", and onClose runs.
func (s *Seeder) Drop(ih metainfo.Hash) {
	s.mu.Lock()
	t := s.torrents[ih]
	delete(s.torrents, ih)
	s.mu.Unlock()
	if t == nil {
		return
	}
	t.cancel()
	t.disconnect()
	if t.onClose != nil {
		t.onClose()
	}
}

// disconnect closes every peer connection of t and stops its refill timer.
func (t *seedTorrent) disconnect() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		// Not waiting: a Close waits until the connection's reader is out
		// of its handler, which may be waiting for t.mu.
		go c.conn.Close()
	}
	if t.retry != nil {
		t.retry.Stop()
	}
}

// Close stops accepting, drops every connection and announces "stopped".
func (s *Seeder) Close() {
	s.cancel()
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for _, t := range s.torrents {
		t.disconnect()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	for ih, t := range s.torrents {
		if t.onClose != nil {
			t.onClose()
		}
		delete(s.torrents, ih)
	}
}

func (s *Seeder) announceLoop(ctx context.Context, mi *p2p.MetaInfo) {
	if s.tracker == nil {
		return
	}
	event := shared.Started
	wait := s.cfg.AnnounceInterval
	for {
		resp, err := s.tracker.Announce(ctx, p2p.AnnounceArgs{InfoHash: mi.InfoHash, PeerID: s.peerID, Port: s.addr.Port(),
			Left: 0, Uploaded: s.sent.Load(), Event: event})
		switch {
		case err == nil:
			event, wait = shared.None, time.Duration(max(resp.Interval, 1))*time.Second
		case ctx.Err() == nil:
			s.log.Warn("announce failed", "digest", mi.Digest, "err", err)
			wait = min(2*wait, time.Minute)
		}
		select {
		case <-ctx.Done():
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = s.tracker.Announce(ctx, p2p.AnnounceArgs{InfoHash: mi.InfoHash, PeerID: s.peerID, Port: s.addr.Port(), Event: shared.Stopped})
			cancel()
			return
		case <-time.After(wait):
		}
	}
}

func (s *Seeder) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("accept", "err", err)
			}
			return
		}
		s.wg.Go(func() { s.serve(c) })
	}
}

// seedTorrent is the shared state of one blob's uploads.
type seedTorrent struct {
	s       *Seeder
	mi      *p2p.MetaInfo
	r       io.ReaderAt
	onClose func()
	ctx     context.Context    // cancelled when the seed is dropped
	cancel  context.CancelFunc // ends the announce loop

	mu         sync.Mutex
	avail      int         // pieces [0, avail) are here to upload
	assigned   []int32     // how many peers each piece was revealed to
	holders    []int32     // how many connected peers hold each piece
	revealedAt []time.Time // when each piece was last revealed
	lostAt     []time.Time // when each piece's last known holder left it the only copy (zero: not lost)
	conns      map[*seedConn]struct{}
	idle       int         // conns fetching nothing from us that lack a piece (seedConn.idle)
	retry      *time.Timer // re-runs fill for starving peers (see pick)
	seq        uint64      // reveals so far (orders uploads, see acquire)

	turn turn.Gate // blocks waiting for the upload cap (see acquire)
}

// acquire waits for the turn to take upload tokens. Blocks go in the order
// their pieces were revealed, not round-robin over peers: each piece leaves at
// the full upload rate and is complete (so tradable) soon, instead of every
// peer's piece crawling in at 1/N of it; at the start the first peers have a
// piece to share after one piece time, not N. Only the token wait is
// ordered: a block whose write stalls on a slow peer holds no turn.
func (t *seedTorrent) acquire(ctx context.Context, seq uint64) error {
	tk := t.turn.Take(func() uint64 { return seq })
	select {
	case <-tk.Ready():
		return nil // a free turn is taken even by a block whose context ended, as before
	default:
	}
	select {
	case <-tk.Ready():
		return nil
	case <-ctx.Done():
		t.turn.Cancel(tk)
		return ctx.Err()
	}
}

// release hands the turn to the waiting block revealed earliest.
func (t *seedTorrent) release() { t.turn.Release() }

// revealSeq orders sc's request for piece i among all uploads (see acquire).
func (sc *seedConn) revealSeq(i int) uint64 {
	sc.t.mu.Lock()
	defer sc.t.mu.Unlock()
	if i < len(sc.seqs) && sc.seqs[i] != 0 {
		return sc.seqs[i]
	}
	return math.MaxUint64
}

// seedConn is one peer connection.
type seedConn struct {
	t    *seedTorrent
	conn net.Conn
	peer string

	// Guarded by t.mu.
	has      []bool
	revealed []bool
	seqs     []uint64 // when each piece was revealed to it (t.seq), 0 = not
	pending  int      // revealed pieces the peer does not hold yet
	held     int      // pieces it holds (has)

	wmu sync.Mutex // serialises writes
	w   *bufio.Writer

	qmu   sync.Mutex
	queue []pp.RequestSpec
	ready chan struct{} // signalled when queue grows
}

const maxBlock = 128 << 10 // larger requests are refused (clients ask for 16 KiB)

func (s *Seeder) serve(c net.Conn) {
	defer c.Close()
	t, err := s.handshake(c)
	if err != nil {
		return
	}
	n := t.mi.Info.NumPieces()
	sc := &seedConn{t: t, conn: c, peer: c.RemoteAddr().String(), has: make([]bool, n), revealed: make([]bool, n), seqs: make([]uint64, n),
		w: bufio.NewWriterSize(c, 64<<10), ready: make(chan struct{}, 1)}
	t.mu.Lock()
	if t.ctx.Err() != nil {
		// Dropped (or closing) since the handshake: Drop has already closed
		// the connections it knew of.
		t.mu.Unlock()
		return
	}
	t.conns[sc] = struct{}{}
	t.idle++ // it holds nothing and was shown nothing
	t.mu.Unlock()
	defer t.drop(sc)

	// Unchoke at once; no bitfield (we "have" nothing until we reveal it).
	if err := sc.send(pp.Message{Type: pp.Unchoke}); err != nil {
		return
	}
	t.fill(sc)
	wctx, wcancel := context.WithCancel(s.ctx)
	defer wcancel()
	s.wg.Go(func() {
		if err := sc.writeLoop(wctx); err != nil {
			c.Close()
		}
	})
	sc.readLoop()
}

// handshake reads the peer's BitTorrent handshake and answers it only if the
// blob is one we seed; a peer asking for anything else gets nothing back.
func (s *Seeder) handshake(c net.Conn) (*seedTorrent, error) {
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	defer c.SetDeadline(time.Time{})
	var b [68]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return nil, err
	}
	if string(b[:20]) != pp.Protocol {
		return nil, fmt.Errorf("not a BitTorrent handshake")
	}
	var ih metainfo.Hash
	copy(ih[:], b[28:48])
	s.mu.Lock()
	t := s.torrents[ih]
	s.mu.Unlock()
	if t == nil {
		return nil, fmt.Errorf("unknown info-hash %s", ih)
	}
	if err := p2p.WriteHandshake(c, ih, s.peerID); err != nil {
		return nil, err
	}
	return t, nil
}

func (sc *seedConn) send(msgs ...pp.Message) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	_ = sc.conn.SetWriteDeadline(time.Now().Add(2 * time.Minute))
	for _, m := range msgs {
		if err := m.WriteTo(sc.w); err != nil {
			return err
		}
	}
	return sc.w.Flush()
}

func (sc *seedConn) readLoop() {
	_ = wire.ReadMessages(sc.conn, wire.Options{Buffer: 4 << 10, MaxLength: 1 << 20, Idle: 5 * time.Minute}, func(b []byte) error {
		if len(b) == 0 {
			return nil // keep-alive
		}
		m, err := wire.Decode(b)
		if err != nil {
			return err
		}
		switch m.Type {
		case pp.Have:
			sc.t.peerHas(sc, int(m.Index))
		case pp.Bitfield:
			for i, ok := range m.Bitfield {
				if ok {
					sc.t.peerHas(sc, i)
				}
			}
		case pp.Request:
			if !sc.t.valid(m.RequestSpec()) || !sc.t.offered(sc, int(m.Index)) {
				// A peer that asks for nonsense, or for a piece it was never
				// shown (which would get round the super-seeding that keeps
				// the origin's upload at about one copy), is dropped.
				return errBadRequest
			}
			sc.qmu.Lock()
			sc.queue = append(sc.queue, m.RequestSpec())
			sc.qmu.Unlock()
			select {
			case sc.ready <- struct{}{}:
			default:
			}
		case pp.Cancel:
			rs := m.RequestSpec()
			sc.qmu.Lock()
			for i, q := range sc.queue {
				if q == rs {
					sc.queue = append(sc.queue[:i], sc.queue[i+1:]...)
					break
				}
			}
			sc.qmu.Unlock()
		}
		return nil
	})
}

var errBadRequest = errors.New("superseed: request for a piece not shown")

// writeLoop answers queued requests in order, within the upload cap.
func (sc *seedConn) writeLoop(ctx context.Context) error {
	buf := make([]byte, maxBlock)
	keepalive := time.NewTicker(time.Minute)
	defer keepalive.Stop()
	for {
		sc.qmu.Lock()
		var rs pp.RequestSpec
		ok := len(sc.queue) > 0
		if ok {
			rs, sc.queue = sc.queue[0], sc.queue[1:]
		}
		sc.qmu.Unlock()
		if !ok {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-sc.ready:
			case <-keepalive.C:
				if err := sc.send(pp.Message{Keepalive: true}); err != nil {
					return err
				}
			}
			continue
		}
		if l := sc.t.s.limiter; l != nil {
			if err := sc.t.acquire(ctx, sc.revealSeq(int(rs.Index))); err != nil {
				return err
			}
			err := p2p.WaitN(ctx, l, int(rs.Length))
			sc.t.release()
			if err != nil {
				return err
			}
		}
		b := buf[:rs.Length]
		off := int64(rs.Index)*sc.t.mi.Info.PieceLength + int64(rs.Begin)
		if _, err := sc.t.r.ReadAt(b, off); err != nil {
			return fmt.Errorf("read piece %d: %w", rs.Index, err)
		}
		if err := sc.send(pp.Message{Type: pp.Piece, Index: rs.Index, Begin: rs.Begin, Piece: b}); err != nil {
			return err
		}
		sc.t.s.sent.Add(int64(rs.Length))
	}
}

// valid checks a request against the blob: a block inside one piece.
func (t *seedTorrent) valid(rs pp.RequestSpec) bool {
	n := t.mi.Info.NumPieces()
	if int(rs.Index) >= n || rs.Length == 0 || rs.Length > maxBlock {
		return false
	}
	plen := t.mi.Info.Piece(int(rs.Index)).Length()
	return int64(rs.Begin)+int64(rs.Length) <= plen
}

// offered reports whether piece i was revealed to sc.
func (t *seedTorrent) offered(sc *seedConn, i int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return sc.revealed[i]
}

func (t *seedTorrent) peerHas(sc *seedConn, i int) {
	if i < 0 || i >= len(t.holders) {
		return
	}
	t.mu.Lock()
	if !sc.has[i] {
		was := sc.idle()
		sc.has[i] = true
		sc.held++
		t.holders[i]++
		t.lostAt[i] = time.Time{} // a copy was passed on after all
		if sc.revealed[i] {
			sc.pending--
		}
		t.idleChanged(sc, was)
	}
	t.mu.Unlock()
	t.fill(sc)
}

// fill reveals pieces to sc until it has `reveal` pieces to fetch from us.
// Each piece leaves the origin about once: sc is shown a piece no peer has
// been shown or holds, the lowest index first, so peers joining together start
// on different pieces and pieces enter the swarm roughly in file order
// (agents' in-order verified prefix, what they stream and sha256, keeps up).
// A new piece goes to a peer fetching nothing from us while there is one
// (see refill), not queued behind another piece at a peer already fetching
// one: with the blob still arriving there are more peers than new pieces,
// and the second piece of a slow peer (an agent at a quarter of the
// others' link) waits there for the first, held by nobody else meanwhile.
// Once every piece is out, sc gets more only if it is starving (see pick),
// one at a time: at the end of a pull our upload goes to each starving peer
// in turn, not two deep to the first (a quarter of 64 agents at R/4, U =
// R: slowest over own bound 1.11-1.31x in 16 runs one at a time, two of
// them over 1.30x; 1.10-1.32x in 10 with two, three over).
func (t *seedTorrent) fill(sc *seedConn) {
	var haves []pp.Message
	t.mu.Lock()
	now := t.s.now()
	for sc.pending < t.s.reveal {
		best, wait := t.pick(sc, now)
		if best < 0 {
			if wait > 0 && t.retry == nil && t.ctx.Err() == nil {
				t.retry = time.AfterFunc(wait, t.refill)
			}
			break
		}
		fresh := t.holders[best] == 0 && (t.assigned[best] == 0 || !t.lostAt[best].IsZero())
		if sc.pending > 0 && (!fresh || t.idle > 0) {
			break // a second copy, or a peer (not sc) fetching nothing
		}
		was := sc.idle()
		if !t.lostAt[best].IsZero() {
			t.lostAt[best] = time.Time{}
			t.assigned[best] = 0 // handed out anew (see drop)
			t.s.lost.Add(1)
		}
		sc.revealed[best] = true
		sc.pending++
		t.idleChanged(sc, was)
		t.assigned[best]++
		t.revealedAt[best] = now
		t.seq++
		sc.seqs[best] = t.seq
		haves = append(haves, pp.Message{Type: pp.Have, Index: pp.Integer(best)})
	}
	t.mu.Unlock()
	if len(haves) > 0 {
		_ = sc.send(haves...)
	}
}

// pick chooses the next piece to reveal to sc, or -1. First the pieces no
// peer has been shown or holds, and those lost with their holder lostAfter
// ago (see drop). After that sc is shown a second copy only if
// it is starving, every piece it lacks held by no peer (still on its way to
// another, or its holder left), and only a piece revealed at least patience
// ago: until then the copy on its way is the faster source (a second one
// would halve its share of our upload), but a slow or stuck peer must not
// hold the swarm up. wait > 0 says when to ask again. t.mu is held.
func (t *seedTorrent) pick(sc *seedConn, now time.Time) (best int, wait time.Duration) {
	best, bestA, bestH := -1, int32(0), int32(0)
	starving := true
	var lostWait time.Duration
	for i := range t.avail {
		if sc.has[i] {
			continue
		}
		a, h := t.assigned[i], t.holders[i]
		if h > 0 {
			starving = false
		}
		if sc.revealed[i] {
			continue
		}
		if h == 0 && !t.lostAt[i].IsZero() {
			// Lost with its holder: handed out as if new once the Haves
			// of any copy it passed on have had time to arrive.
			if w := t.lostAt[i].Add(t.lostAfter()).Sub(now); w > 0 {
				lostWait = minWait(lostWait, w)
			} else {
				a = 0
			}
		}
		if best < 0 || a < bestA || (a == bestA && h < bestH) {
			best, bestA, bestH = i, a, h
		}
	}
	if best < 0 || (bestA == 0 && bestH == 0) {
		return best, 0
	}
	if !starving {
		return -1, lostWait
	}
	// The least handed-out piece whose last reveal is oldest.
	best, wait = -1, 0
	patience := t.patience()
	for i := range t.avail {
		if sc.has[i] || sc.revealed[i] {
			continue
		}
		if w := t.revealedAt[i].Add(patience).Sub(now); w > 0 {
			wait = minWait(wait, w)
			continue
		}
		if best < 0 || t.assigned[i] < t.assigned[best] {
			best = i
		}
	}
	if best >= 0 {
		return best, 0
	}
	return -1, minWait(wait, lostWait)
}

// minWait is the sooner of two waits, 0 being none.
func minWait(a, b time.Duration) time.Duration {
	if a == 0 || (b > 0 && b < a) {
		return b
	}
	return a
}

// lostAfter is how long a piece whose only known holder left waits before
// it is handed out again: long enough for the Have of a copy the holder
// passed on just before it left (agents hold Haves to an origin back for up
// to four pieces at their upload cap, at most 2 s: p2p's lazyDelay), short next to
// a pull (each agent lacking it would otherwise wait for the end, when it
// starves: minutes in a swarm of thousands).
func (t *seedTorrent) lostAfter() time.Duration {
	const floor = 5 * time.Second
	l := t.s.limiter
	if l == nil || l.Limit() <= 0 {
		return floor
	}
	return max(floor, time.Duration(8*float64(t.mi.Info.PieceLength)/float64(l.Limit())*float64(time.Second)))
}

// patience is how long a revealed piece may take before a starving peer is
// shown a second copy: twice one piece at an even share of our upload.
func (t *seedTorrent) patience() time.Duration {
	const floor = time.Second
	l := t.s.limiter
	if l == nil || l.Limit() <= 0 {
		return floor
	}
	secs := 2 * float64(t.mi.Info.PieceLength) * float64(max(1, len(t.conns))) / float64(l.Limit())
	return max(floor, time.Duration(secs*float64(time.Second)))
}

// refill gives every peer another chance at a reveal (see pick). A peer
// already fetching a piece leaves new ones to those fetching nothing (see
// fill): once none of those is left, a second pass gives it what they did
// not take.
func (t *seedTorrent) refill() {
	t.mu.Lock()
	t.retry = nil
	conns := make([]*seedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for pass := range 2 {
		if pass == 1 {
			t.mu.Lock()
			idle := t.idle
			t.mu.Unlock()
			if idle > 0 {
				return // they took every new piece there was
			}
		}
		for _, c := range conns {
			t.fill(c)
		}
	}
}

// idle reports whether sc fetches nothing from us and lacks a piece.
// t.mu is held.
func (sc *seedConn) idle() bool { return sc.pending == 0 && sc.held < len(sc.has) }

// idleChanged counts sc in t.idle as it is now, sc.idle() having been was
// before a change. t.mu is held.
func (t *seedTorrent) idleChanged(sc *seedConn, was bool) {
	if now := sc.idle(); now != was {
		if now {
			t.idle++
		} else {
			t.idle--
		}
	}
}

// drop forgets sc. A peer that leaves before it had every piece (killed,
// say: a spot instance taken back) may take with it the only copy of a piece
// that just went out: if no other peer holds it or is fetching it from us, it
// is lost, and handed out again after lostAfter, before any peer starves for
// it. A peer that held them all is a seed elsewhere now: it lost nothing.
func (t *seedTorrent) drop(sc *seedConn) {
	t.mu.Lock()
	delete(t.conns, sc)
	if sc.idle() {
		t.idle--
	}
	now := t.s.now()
	seed := !slices.Contains(sc.has, false)
	lost := false
	for i := range sc.has {
		switch {
		case sc.has[i]:
			t.holders[i]--
			if t.holders[i] == 0 && !seed && t.youngLocked(i, now) && !t.fetchingLocked(i) {
				t.lostAt[i] = now
				lost = true
			}
		case sc.revealed[i]:
			t.assigned[i]-- // it never got it: hand it out again
		}
	}
	t.mu.Unlock()
	if lost && t.ctx.Err() == nil {
		time.AfterFunc(t.lostAfter(), t.refill)
	}
	// What it held or was fetching may now have to come from us.
	t.refill()
}

// youngLocked reports whether piece i went out once, less than lostAfter
// ago: the one peer it went to may still be its only holder. An older piece
// has spread; that no connected peer holds it any more says only that its
// holders left us, as complete agents do (two seeds have nothing to trade:
// at the end of a pull, the last to leave often had not told us of its last
// pieces yet, and looked as if it left mid-pull), and it is in the swarm.
// t.mu is held.
func (t *seedTorrent) youngLocked(i int, now time.Time) bool {
	return t.assigned[i] == 1 && now.Sub(t.revealedAt[i]) < t.lostAfter()
}

// fetchingLocked reports whether a connected peer was shown piece i and
// does not hold it yet (it is on its way from us). t.mu is held.
func (t *seedTorrent) fetchingLocked(i int) bool {
	for c := range t.conns {
		if c.revealed[i] && !c.has[i] {
			return true
		}
	}
	return false
}
