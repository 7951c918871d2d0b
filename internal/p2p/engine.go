package p2p

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/turn"
)

// The engine moves the blocks of live swarms (Shoal's own torrents, whose
// peers are all Shoal agents and origins). It replaced anacrolix/torrent
// there: the library spends its CPU on work that grows with connections x
// pieces (a Have to every peer for every piece, each making the receiver
// recompute its requests from a scan of the whole piece order; connection
// turnover), 18-40 core-seconds per GiB delivered in Shoal's scale set.
// The library still seeds standard torrents (standard.go), for any
// BitTorrent client: the engine owns the node's listening port and hands
// it the connections for info-hashes it does not know.
type engine struct {
	n        *Node
	cfg      Config
	log      *slog.Logger
	ln       net.Listener
	lib      *handoff
	up, down *rate.Limiter
	upCap    int64 // the upload cap, bytes per second (0: none)
	// extHandshake is what peers speaking the extension protocol are told
	// (uploadcap.go).
	extHandshake pp.Message
	// upTurn orders the blocks waiting for the upload cap: the one for the
	// peer furthest behind goes first (peerConn.behind).
	upTurn turn.Gate
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	sent, wasted atomic.Int64
	moved        atomic.Int64 // block requests taken back from stalled peers

	mu        sync.Mutex
	transfers map[metainfo.Hash]*transfer
}

func newEngine(n *Node, ln net.Listener, up, down *rate.Limiter) *engine {
	ctx, cancel := context.WithCancel(context.Background())
	e := &engine{n: n, cfg: n.cfg, log: n.log, ln: ln, up: up, down: down, ctx: ctx, cancel: cancel,
		lib: &handoff{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}, transfers: map[metainfo.Hash]*transfer{}}
	if up != nil && up.Limit() != rate.Inf && up.Limit() > 0 {
		e.upCap = int64(up.Limit())
	}
	e.extHandshake = extHandshakeMessage(e.upCap)
	e.wg.Go(e.acceptLoop)
	e.wg.Go(e.tickLoop)
	return e
}

func (e *engine) close() {
	e.cancel()
	e.ln.Close()
	e.lib.Close()
	for _, t := range e.all() {
		e.remove(t)
	}
	e.wg.Wait()
}

// add starts a transfer of mi on st.
func (e *engine) add(mi *MetaInfo, st *blobStorage) (*transfer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.transfers[mi.InfoHash]; ok {
		return nil, ErrInSwarm
	}
	t := newTransfer(e, mi, st)
	e.transfers[mi.InfoHash] = t
	return t, nil
}

// remove ends t: its connections close, and once remove returns no
// goroutine of t reads or writes its storage.
func (e *engine) remove(t *transfer) {
	e.mu.Lock()
	if e.transfers[t.mi.InfoHash] == t {
		delete(e.transfers, t.mi.InfoHash)
	}
	e.mu.Unlock()
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.closeAsync()
	}
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}

// all returns the transfers running now.
func (e *engine) all() []*transfer {
	e.mu.Lock()
	defer e.mu.Unlock()
	ts := make([]*transfer, 0, len(e.transfers))
	for _, t := range e.transfers {
		ts = append(ts, t)
	}
	return ts
}

func (e *engine) transfer(ih metainfo.Hash) *transfer {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.transfers[ih]
}

func (e *engine) acceptLoop() {
	for {
		c, err := e.ln.Accept()
		if err != nil {
			if e.ctx.Err() == nil {
				e.log.Warn("p2p accept", "err", err)
				time.Sleep(100 * time.Millisecond) // out of descriptors, say
				continue
			}
			return
		}
		e.wg.Go(func() { e.incoming(c) })
	}
}

// handshakeTimeout bounds a handshake either way.
const handshakeTimeout = 10 * time.Second

// incoming reads a peer's handshake and joins it to the transfer it names,
// or hands the connection to the library (a standard torrent).
func (e *engine) incoming(c net.Conn) {
	ap, ok := peerAddrPort(c.RemoteAddr())
	if !ok || e.n.bans.blocked(ap.Addr()) {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	var hs [68]byte
	if _, err := io.ReadFull(c, hs[:]); err != nil || string(hs[:20]) != pp.Protocol {
		c.Close()
		return
	}
	var ih metainfo.Hash
	copy(ih[:], hs[28:48])
	t := e.transfer(ih)
	if t == nil {
		_ = c.SetDeadline(time.Time{})
		e.lib.offer(e.ctx, &replayConn{Conn: c, r: io.MultiReader(bytes.NewReader(hs[:]), c)})
		return
	}
	if err := writeHandshake(c, ih, e.n.peerID, true); err != nil {
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	var id [20]byte
	copy(id[:], hs[48:])
	t.attach(c, ap, id, false, speaksExt(hs[:]))
}

// WriteHandshake writes the BitTorrent handshake for torrent ih from peer
// id, with no extension bits (the origins' seeders speak none).
func WriteHandshake(w io.Writer, ih metainfo.Hash, id [20]byte) error {
	return writeHandshake(w, ih, id, false)
}

// writeHandshake is WriteHandshake, with the extension protocol's bit
// (BEP 10) when ext is set: the engine speaks only its handshake
// (extHandshake).
func writeHandshake(w io.Writer, ih metainfo.Hash, id [20]byte, ext bool) error {
	b := make([]byte, 0, 68)
	b = append(b, pp.Protocol...)
	var reserved [8]byte
	if ext {
		reserved[extByte] |= extBit
	}
	b = append(b, reserved[:]...)
	b = append(b, ih[:]...)
	b = append(b, id[:]...)
	_, err := w.Write(b)
	return err
}

// The extension protocol's bit in the handshake's reserved bytes (BEP 10).
const (
	extByte = 5
	extBit  = 0x10
)

// speaksExt reports whether handshake hs sets the extension protocol's bit.
func speaksExt(hs []byte) bool { return hs[20+extByte]&extBit != 0 }

// dial connects to a peer the tracker listed and joins it to t; origin
// says which of t's dial counts it is in.
func (t *transfer) dial(ap netip.AddrPort, origin bool) {
	e := t.e
	d := net.Dialer{Timeout: handshakeTimeout}
	if a := e.n.addr.Addr(); !a.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: a.AsSlice()}
	}
	c, err := d.DialContext(t.ctx, "tcp", ap.String())
	if err == nil {
		err = func() error {
			_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
			if err := writeHandshake(c, t.mi.InfoHash, e.n.peerID, true); err != nil {
				return err
			}
			var hs [68]byte
			if _, err := io.ReadFull(c, hs[:]); err != nil {
				return err
			}
			if string(hs[:20]) != pp.Protocol || !bytes.Equal(hs[28:48], t.mi.InfoHash[:]) {
				return errors.New("handshake for another torrent")
			}
			_ = c.SetDeadline(time.Time{})
			var id [20]byte
			copy(id[:], hs[48:])
			t.attach(c, ap, id, true, speaksExt(hs[:]))
			return nil
		}()
		if err != nil {
			c.Close()
		}
	}
	t.mu.Lock()
	if origin {
		t.dialingOrigins--
	} else {
		t.dialing--
	}
	if cd := t.peers[ap]; cd != nil {
		if err != nil {
			cd.fails++
			cd.nextTry = time.Now().Add(min(time.Duration(1<<min(cd.fails, 6))*2*time.Second, 2*time.Minute))
		} else {
			cd.fails = 0
		}
	}
	t.mu.Unlock()
}

// attach runs connection c to a peer whose handshake is done; ext says
// whether the peer speaks the extension protocol.
func (t *transfer) attach(conn net.Conn, ap netip.AddrPort, id [20]byte, outgoing, ext bool) {
	e := t.e
	t.mu.Lock()
	refuse := t.closed || id == e.n.peerID || e.n.bans.blocked(ap.Addr())
	limit := e.cfg.ConnsPerTorrent
	if !outgoing && t.haveN < t.n {
		limit += incomingSlack(limit)
	}
	if !refuse && !(outgoing && isOriginPeerID(id) && t.originConnsLocked() < maxOriginConns) && t.cappedConnsLocked() >= limit {
		// Full: a peer that came to us (one joining late, say) takes the
		// place of a connection neither side wants anything from. Never an
		// origin's: it wants nothing from us, and we want nothing from it
		// only until its super-seeder reveals the next piece to us.
		refuse = true
		if !outgoing {
			for old := range t.conns {
				if !old.origin && !old.interested && !old.peerInterested {
					t.dropLocked(old)
					refuse = false
					break
				}
			}
		}
	}
	if id == e.n.peerID {
		if cd := t.peers[ap]; cd != nil {
			cd.nextTry = time.Now().Add(24 * time.Hour) // ourselves
		}
	}
	// Two peers that dialled each other keep the connection dialled by the
	// one with the smaller peer ID.
	dialer := func(c *peerConn) [20]byte {
		if c.outgoing {
			return e.n.peerID
		}
		return c.id
	}
	c := newPeerConn(t, conn, ap, id, outgoing)
	for old := range t.conns {
		if refuse || old.id != id {
			continue
		}
		od, nd := dialer(old), dialer(c)
		if bytes.Compare(od[:], nd[:]) <= 0 {
			refuse = true
		} else {
			t.dropLocked(old)
		}
	}
	if refuse {
		t.mu.Unlock()
		conn.Close()
		return
	}
	t.conns[c] = struct{}{}
	if t.haveN > 0 {
		bf := make([]bool, t.n)
		for i := range t.n {
			bf[i] = t.have.get(i)
		}
		c.queue(pp.Message{Type: pp.Bitfield, Bitfield: bf})
	}
	if ext {
		c.queue(e.extHandshake)
	}
	c.queue(pp.Message{Type: pp.Unchoke}) // agents upload to every peer they keep
	// Started under mu: once remove has marked t closed, no goroutine of t
	// starts (its wait has begun).
	t.wg.Go(func() {
		if err := c.writeLoop(); err != nil {
			conn.Close()
		}
	})
	t.wg.Go(func() {
		err := c.readLoop()
		t.detach(c)
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && t.ctx.Err() == nil {
			e.log.Debug("peer connection ended", "digest", t.mi.Digest, "peer", ap, "err", err)
		}
	})
	t.mu.Unlock()
}

// detach forgets a connection that ended.
func (t *transfer) detach(c *peerConn) {
	c.conn.Close()
	close(c.gone)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropLocked(c) {
		t.fillAllLocked()
		t.maintainLocked(time.Now())
	}
}

// dropLocked closes c and forgets it at once (its reader ends a moment
// later), so that a connection being replaced never counts against
// conns_per_torrent; it reports whether c was still counted.
func (t *transfer) dropLocked(c *peerConn) bool {
	c.closed = true
	c.closeAsync()
	if _, ok := t.conns[c]; !ok {
		return false
	}
	delete(t.conns, c)
	for w, word := range c.has {
		for word != 0 {
			j := bits.TrailingZeros64(word)
			word &^= 1 << j
			t.avail[w*64+j]--
		}
	}
	t.returnRequestsLocked(c)
	return true
}

func (t *transfer) fillAllLocked() {
	for c := range t.conns {
		t.fillLocked(c)
	}
}

// addPeers adds peers the tracker listed (and dials some if short).
func (t *transfer) addPeers(peers []netip.AddrPort, ids [][20]byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, ap := range peers {
		if ap == t.e.n.addr || t.peers[ap] != nil {
			continue
		}
		if len(t.peers) >= maxCandidates {
			t.forgetOneLocked()
			if len(t.peers) >= maxCandidates {
				break
			}
		}
		cd := &candidate{}
		if k < len(ids) {
			cd.id = ids[k]
		}
		t.peers[ap] = cd
		t.order = append(t.order, ap)
	}
	t.maintainLocked(time.Now())
}

// wantsPeers reports whether t's next announce should ask the tracker for
// peers: only while it downloads and knows fewer peers it may dial than
// conns_per_torrent. Otherwise it announces with numwant=0. Every agent
// announced every 3 s while downloading, and decoding 50 peers each time
// was 6 % of the CPU of a swarm of 256 (N = 256 at 125 kB/s: 45 announces
// an agent), for peers it already knew.
func (t *transfer) wantsPeers() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.haveN == t.n {
		return false
	}
	dialable := t.dialableLocked(time.Now())
	spare := 0
	for ap, cd := range t.peers {
		if dialable(ap, cd) {
			if spare++; spare >= t.e.cfg.ConnsPerTorrent {
				return false
			}
		}
	}
	return true
}

// lonely reports whether t downloads with no connection, no dial under
// way and no peer it may dial: only the tracker can help (see
// lonelyAnnounce).
func (t *transfer) lonely() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.haveN == t.n || len(t.conns) > 0 || t.dialing > 0 || t.dialingOrigins > 0 {
		return false
	}
	return !t.spareCandidateLocked(time.Now())
}

// maxOriginConns is how many connections to origins a transfer keeps
// outside conns_per_torrent. An origin's super-seeder hands each agent
// pieces nobody else has yet: an agent that lost its place at the origin
// to other agents had nothing new to trade, and the swarm with it (8
// agents at 25 MB/s: 1.18-1.42x T_min with origins inside the cap, 1.05x
// outside). More than the ring's replicas would be an origin twice.
const maxOriginConns = 3

// incomingSlack is how many peers that dial it a downloading transfer takes
// beyond conns_per_torrent. A full transfer dials nobody, so a peer that
// dials is short of connections; refused by full peers, it stays short, and
// since every peer shares its upload among its connections, it downloads
// at that fraction of its link (8 agents at 25 MB/s: one held at 4 of 6
// connections took 1.09-1.14x T_min when the rest took 1.03x).
func incomingSlack(conns int) int { return max(1, conns/3) }

// originConnsLocked counts t's connections to origins.
func (t *transfer) originConnsLocked() int {
	n := 0
	for c := range t.conns {
		if c.origin {
			n++
		}
	}
	return n
}

// cappedConnsLocked counts the connections conns_per_torrent caps: all but
// maxOriginConns to origins.
func (t *transfer) cappedConnsLocked() int {
	return len(t.conns) - min(t.originConnsLocked(), maxOriginConns)
}

// maxCandidates bounds the tracker's peers a transfer remembers.
const maxCandidates = 256

// forgetOneLocked drops a candidate that failed to connect.
func (t *transfer) forgetOneLocked() {
	for k, ap := range t.order {
		if t.peers[ap].fails > 0 {
			delete(t.peers, ap)
			t.order = slices.Delete(t.order, k, k+1)
			return
		}
	}
}

// maintainLocked dials peers while the transfer is short of connections
// and downloading.
func (t *transfer) maintainLocked(now time.Time) {
	if t.closed || t.haveN == t.n {
		return
	}
	want := t.e.cfg.ConnsPerTorrent - t.cappedConnsLocked() - t.dialing
	origins := maxOriginConns - t.originConnsLocked() - t.dialingOrigins
	if want <= 0 && origins <= 0 {
		return
	}
	dialable := t.dialableLocked(now)
	// In the tracker's order: it lists seeds (origins among them) first.
	// Origins (known by the peer IDs the tracker lists) are dialled even
	// when the transfer is full: they are outside the cap.
	for _, ap := range t.order {
		if want <= 0 && origins <= 0 {
			break
		}
		cd := t.peers[ap]
		origin := isOriginPeerID(cd.id) && origins > 0
		if (want <= 0 && !origin) || !dialable(ap, cd) {
			continue
		}
		cd.nextTry = now.Add(5 * time.Second) // not again while this dial runs
		if origin {
			t.dialingOrigins++
			origins--
		} else {
			t.dialing++
			want--
		}
		t.wg.Go(func() { t.dial(ap, origin) })
	}
}

// Timings of the tick: keepalives, dead and useless connections.
const (
	keepaliveEvery = time.Minute
	idleTimeout    = 3 * time.Minute
	snubTimeout    = 30 * time.Second
)

// uselessAfter is how long a connection idle both ways is kept by a
// transfer over its cap, or by a full one that knows a peer to dial
// instead (a variable for tests).
var uselessAfter = 10 * time.Second

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func (e *engine) tickLoop() {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-tk.C:
			for _, t := range e.all() {
				t.tick(now)
			}
		}
	}
}

// kick runs t's tick now (it completed: drop the connections it no longer
// needs).
func (e *engine) kick(t *transfer) { t.tick(time.Now()) }

func (t *transfer) tick(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	sec := now.Unix()
	complete := t.haveN == t.n
	excess := t.cappedConnsLocked() - t.e.cfg.ConnsPerTorrent
	// A full downloading transfer replaces one connection a tick that has
	// been idle both ways for uselessAfter, while it knows a peer to dial
	// instead: full peers dial nobody, so agents that hold the same pieces
	// and are connected only to each other would otherwise wait for good
	// (the simulator found two such groups in a swarm of 32, each waiting
	// for the pieces the origin had revealed to the other).
	replace := !complete && excess >= 0
	dropped := false
	for c := range t.conns {
		idle := !c.origin && !c.interested && !c.peerInterested
		if !idle {
			c.idleSince = time.Time{}
		} else if c.idleSince.IsZero() {
			c.idleSince = now
		}
		switch {
		case sec-c.lastRead.Load() > int64(idleTimeout/time.Second):
			dropped = t.dropLocked(c) || dropped
			continue
		case complete && (c.origin || int(c.hasN.Load()) == t.n):
			dropped = t.dropLocked(c) || dropped // two seeds have nothing to trade
			continue
		case excess > 0 && idle && now.Sub(c.idleSince) > uselessAfter:
			// Over the cap (peers that dialled a downloading transfer,
			// incomingSlack): a connection idle at every tick for
			// uselessAfter, not at this one only (two agents at the
			// swarm's front often hold the same pieces for a moment), and
			// never an origin's, outside the cap.
			dropped = t.dropLocked(c) || dropped
			excess--
			continue
		case replace && idle && now.Sub(c.idleSince) > uselessAfter && t.spareCandidateLocked(now):
			if cd := t.peers[c.addr]; cd != nil {
				cd.nextTry = now.Add(snubTimeout) // someone else first
			}
			dropped = t.dropLocked(c) || dropped
			replace = false
			continue
		}
		if sec-c.lastWrite.Load() >= int64(keepaliveEvery/time.Second) {
			c.queue(pp.Message{Keepalive: true})
		}
		// An agent that sits on our requests loses those that another peer
		// could send (cancelled, so that it does not send them too late),
		// and gets no more until it sends a block, snubTimeout passes or
		// the transfer runs underfed (fillLocked). Not an origin: its
		// super-seeder queues uploads in reveal order on purpose, and its
		// pieces are rarely held elsewhere. A peer that told us an upload
		// cap twice ours serves us after its equals on purpose too
		// (uploadcap.go): it loses the requests, not the next ones.
		if !c.origin && len(c.reqs) > 0 && now.Sub(latest(c.lastBlock, c.reqs[0].at)) > c.stallAfter(t.blockLen(c.reqs[0].piece, c.reqs[0].block)) && t.moveStalledLocked(c) {
			if !c.faster() {
				c.snubbedUntil = now.Add(snubTimeout)
			}
			t.fillAllLocked()
		}
	}
	if dropped {
		t.fillAllLocked()
	}
	t.feedLocked(now)
	t.maintainLocked(now)
}

// dialableLocked returns whether a candidate may be dialled now: not
// connected (by address or peer ID), not waiting for its next try, not
// banned.
func (t *transfer) dialableLocked(now time.Time) func(netip.AddrPort, *candidate) bool {
	ids := make(map[[20]byte]bool, len(t.conns))
	addrs := make(map[netip.AddrPort]bool, len(t.conns))
	for c := range t.conns {
		ids[c.id] = true
		addrs[c.addr] = true
	}
	return func(ap netip.AddrPort, cd *candidate) bool {
		return !addrs[ap] && !(cd.id != [20]byte{} && ids[cd.id]) && !now.Before(cd.nextTry) && !t.e.n.bans.blocked(ap.Addr())
	}
}

// spareCandidateLocked reports whether t knows a peer it may dial now.
func (t *transfer) spareCandidateLocked(now time.Time) bool {
	dialable := t.dialableLocked(now)
	for ap, cd := range t.peers {
		if dialable(ap, cd) {
			return true
		}
	}
	return false
}

// moveStalledLocked cancels c's requests for pieces another connection
// holds, and reports whether there were any.
func (t *transfer) moveStalledLocked(c *peerConn) bool {
	moved := false
	c.reqs = slices.DeleteFunc(c.reqs, func(r blockReq) bool {
		for d := range t.conns {
			if d != c && !d.choked && d.has.get(r.piece) {
				if p := t.pieces[r.piece]; p != nil {
					p.reqs[r.block]--
				}
				c.queue(pp.Message{Type: pp.Cancel, Index: pp.Integer(r.piece), Begin: pp.Integer(int64(r.block) * blockSize), Length: pp.Integer(t.blockLen(r.piece, r.block))})
				moved = true
				t.e.moved.Add(1)
				return true
			}
		}
		return false
	})
	return moved
}

// handoff is the library's listener: the connections the engine accepted
// for torrents it does not run.
type handoff struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (h *handoff) offer(ctx context.Context, c net.Conn) {
	select {
	case h.conns <- c:
	case <-h.done:
		c.Close()
	case <-ctx.Done():
		c.Close()
	}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Addr() net.Addr { return h.addr }

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

// replayConn gives back the handshake the engine read.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func peerAddrPort(a net.Addr) (netip.AddrPort, bool) {
	if a == nil {
		return netip.AddrPort{}, false
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
