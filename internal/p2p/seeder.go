package p2p

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/anacrolix/torrent/tracker/shared"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
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
	cfg     Config
	log     *slog.Logger
	ln      net.Listener
	addr    netip.AddrPort
	peerID  [20]byte
	limiter *rate.Limiter
	tracker *trackerClient
	sent    atomic.Int64
	// reveal is how many revealed-but-not-yet-held pieces a peer may have.
	reveal int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	torrents map[metainfo.Hash]*seedTorrent
}

// NewSeeder listens on cfg.Listen; peers are told about it by the trackers.
func NewSeeder(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Seeder, error) {
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p listen %q: %w", cfg.Listen, err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p listen %s: %w", cfg.Listen, err)
	}
	s := &Seeder{cfg: cfg, log: log.With("component", "seeder"), ln: ln, reveal: 2,
		torrents: map[metainfo.Hash]*seedTorrent{}}
	s.addr = netip.AddrPortFrom(ap.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port))
	copy(s.peerID[:], RoleOrigin.prefix())
	if _, err := rand.Read(s.peerID[8:]); err != nil {
		ln.Close()
		return nil, err
	}
	if cfg.UploadRate > 0 {
		s.limiter = newLimiter(cfg.UploadRate)
	}
	s.tracker = newTrackerClient(cfg.Trackers, ap.Addr())
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if reg != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_sent_bytes_total",
			Help: "Piece bytes sent over BitTorrent."}, func() float64 { return float64(s.sent.Load()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_p2p_swarms", Help: "Blobs this node is in the swarm of."},
				func() float64 { s.mu.Lock(); defer s.mu.Unlock(); return float64(len(s.torrents)) }))
	}
	s.wg.Go(s.acceptLoop)
	return s, nil
}

// Addr is where peers reach the seeder.
func (s *Seeder) Addr() netip.AddrPort { return s.addr }

// BytesSent counts piece data uploaded.
func (s *Seeder) BytesSent() int64 { return s.sent.Load() }

// Seeding reports whether blob mi is being seeded.
func (s *Seeder) Seeding(ih metainfo.Hash) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.torrents[ih]
	return ok
}

// Seed starts seeding the verified blob r described by mi and announces it.
// onClose runs when the seed is dropped (at Close).
func (s *Seeder) Seed(mi *MetaInfo, r io.ReaderAt, onClose func()) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.torrents[mi.InfoHash]; ok {
		return ErrInSwarm
	}
	n := mi.Info.NumPieces()
	ctx, cancel := context.WithCancel(s.ctx)
	t := &seedTorrent{s: s, mi: mi, r: r, onClose: onClose, ctx: ctx, cancel: cancel, assigned: make([]int32, n), holders: make([]int32, n),
		conns: map[*seedConn]struct{}{}}
	s.torrents[mi.InfoHash] = t
	s.wg.Go(func() { s.announceLoop(ctx, mi) })
	return nil
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
	t.mu.Lock()
	for c := range t.conns {
		c.conn.Close()
	}
	t.mu.Unlock()
	if t.onClose != nil {
		t.onClose()
	}
}

// Close stops accepting, drops every connection and announces "stopped".
func (s *Seeder) Close() {
	s.cancel()
	s.ln.Close()
	s.mu.Lock()
	for _, t := range s.torrents {
		t.mu.Lock()
		for c := range t.conns {
			c.conn.Close()
		}
		t.mu.Unlock()
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

func (s *Seeder) announceLoop(ctx context.Context, mi *MetaInfo) {
	if s.tracker == nil {
		return
	}
	event := shared.Started
	wait := s.cfg.AnnounceInterval
	for {
		resp, err := s.tracker.announce(ctx, announceArgs{infoHash: mi.InfoHash, peerID: s.peerID, port: s.addr.Port(),
			left: 0, uploaded: s.sent.Load(), event: event})
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
			_, _ = s.tracker.announce(ctx, announceArgs{infoHash: mi.InfoHash, peerID: s.peerID, port: s.addr.Port(), event: shared.Stopped})
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
	mi      *MetaInfo
	r       io.ReaderAt
	onClose func()
	ctx     context.Context    // cancelled when the seed is dropped
	cancel  context.CancelFunc // ends the announce loop

	mu       sync.Mutex
	assigned []int32 // how many peers each piece was revealed to
	holders  []int32 // how many connected peers hold each piece
	conns    map[*seedConn]struct{}
}

// seedConn is one peer connection.
type seedConn struct {
	t    *seedTorrent
	conn net.Conn
	peer string

	// Guarded by t.mu.
	has      []bool
	revealed []bool
	pending  int // revealed pieces the peer does not hold yet

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
	sc := &seedConn{t: t, conn: c, peer: c.RemoteAddr().String(), has: make([]bool, n), revealed: make([]bool, n),
		w: bufio.NewWriterSize(c, 64<<10), ready: make(chan struct{}, 1)}
	t.mu.Lock()
	if t.ctx.Err() != nil {
		// Dropped (or closing) since the handshake: Drop has already closed
		// the connections it knew of.
		t.mu.Unlock()
		return
	}
	t.conns[sc] = struct{}{}
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
	// Our answer: protocol, no extensions, the info-hash, our peer id.
	out := make([]byte, 0, 68)
	out = append(out, pp.Protocol...)
	out = append(out, make([]byte, 8)...)
	out = append(out, ih[:]...)
	out = append(out, s.peerID[:]...)
	if _, err := c.Write(out); err != nil {
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
	dec := pp.Decoder{R: bufio.NewReader(sc.conn), MaxLength: 1 << 20,
		Pool: &sync.Pool{New: func() any { b := make([]byte, maxBlock); return &b }}}
	for {
		_ = sc.conn.SetReadDeadline(time.Now().Add(5 * time.Minute))
		var m pp.Message
		if err := dec.Decode(&m); err != nil {
			return
		}
		if m.Keepalive {
			continue
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
			if !sc.t.valid(m.RequestSpec()) {
				return // a peer that asks for nonsense is dropped
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
	}
}

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
			if err := l.WaitN(ctx, int(rs.Length)); err != nil {
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

func (t *seedTorrent) peerHas(sc *seedConn, i int) {
	if i < 0 || i >= len(t.holders) {
		return
	}
	t.mu.Lock()
	if !sc.has[i] {
		sc.has[i] = true
		t.holders[i]++
		if sc.revealed[i] {
			sc.pending--
		}
	}
	t.mu.Unlock()
	t.fill(sc)
}

// fill reveals pieces to sc until it has `reveal` pieces to fetch from us:
// those revealed to the fewest peers, then held by the fewest, the lowest
// index among equals. Peers joining together still start on different pieces
// (each reveal counts), and pieces enter the swarm roughly in file order, so
// agents' in-order verified prefix (what they stream and sha256) keeps up
// with the download instead of waiting for a piece revealed last.
func (t *seedTorrent) fill(sc *seedConn) {
	var haves []pp.Message
	t.mu.Lock()
	for sc.pending < t.s.reveal {
		best, bestA, bestH := -1, int32(0), int32(0)
		for i := range t.assigned {
			if sc.has[i] || sc.revealed[i] {
				continue
			}
			a, h := t.assigned[i], t.holders[i]
			if best < 0 || a < bestA || (a == bestA && h < bestH) {
				best, bestA, bestH = i, a, h
			}
		}
		if best < 0 {
			break
		}
		sc.revealed[best] = true
		sc.pending++
		t.assigned[best]++
		haves = append(haves, pp.Message{Type: pp.Have, Index: pp.Integer(best)})
	}
	t.mu.Unlock()
	if len(haves) > 0 {
		_ = sc.send(haves...)
	}
}

func (t *seedTorrent) drop(sc *seedConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, sc)
	for i := range sc.has {
		if sc.has[i] {
			t.holders[i]--
		} else if sc.revealed[i] {
			t.assigned[i]-- // it never got it: hand it out again
		}
	}
}
