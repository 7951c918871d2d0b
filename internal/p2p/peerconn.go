package p2p

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/p2p/wire"
)

// peerConn is one connection of a transfer, on the BitTorrent wire protocol
// (BEP 3; of BEP 10 only the extension handshake, uploadcap.go). A reader
// goroutine handles what the peer sends; a writer goroutine writes what is
// queued for it (control messages batched into one write, then the blocks
// it asked for, within the upload cap).
type peerConn struct {
	t        *transfer
	conn     net.Conn
	addr     netip.AddrPort
	id       [20]byte
	outgoing bool
	agent    bool // a Shoal agent: told of a piece only if it lacks it
	origin   bool // an origin's seeder; only one we dialled (origins dial nobody: a peer dialling us with an origin's ID is not one)
	since    time.Time
	gone     chan struct{} // closed when the connection ends

	// Guarded by t.mu.
	has            bitset
	hasN           atomic.Int32 // pieces it holds (read by the upload turn without t.mu)
	peerUp         atomic.Int64 // the upload cap it told us (bytes per second, 0: none; uploadcap.go)
	served         atomic.Bool  // a block of ours went to it (behind)
	choked         bool         // it chokes us (it discards our requests)
	interested     bool         // we told it we are
	peerInterested bool
	reqs           []blockReq // ours in flight to it, oldest first
	snubbedUntil   time.Time
	idleSince      time.Time     // since when neither side wanted anything of the other, seen at each tick (zero: not idle)
	lastBlock      time.Time     // when its last block we asked for came
	blockGap       time.Duration // moving average of the time between blocks
	quick          bool          // its blockGap is in the faster half of the transfer's (feedLocked)
	closed         bool

	lastRead, lastWrite atomic.Int64 // unix seconds

	wmu       sync.Mutex
	out       []byte           // encoded messages to write
	lazy      []byte           // encoded Haves that may wait for the next write (queueLazy)
	lazyDue   bool             // lazy waited long enough: write it
	told      bool             // the peer was (or is about to be) told we are interested
	untell    bool             // a NotInterested waits with lazy (setInterest)
	lazyTimer *time.Timer      // makes lazy due
	lazyWait  time.Duration    // how long lazy may wait (lazyDelay)
	lazyArmed bool             // lazyTimer runs: lazy is not empty or untell
	serve     []pp.RequestSpec // its requests to answer, in order
	serving   bool             // a block of serve's is on its way (waiting for the upload cap)
	current   pp.RequestSpec   // that block
	cancelled bool             // the peer cancelled it while it waited: it is not sent
	wake      chan struct{}
	held      bool // the writer took bytes from out that it has not written yet

	// Direct writes (queue): the goroutine that queues a message writes
	// it, when nobody else is writing and the writer holds nothing back.
	raw    syscall.RawConn // nil: the writer writes everything
	sendMu sync.Mutex      // held while bytes go to the socket
	dspare []byte          // the direct writes' spare buffer (sendMu)
}

// Limits on what a peer may ask: a block at most maxBlock (superseed's),
// and maxServeQueue requests waiting.
const (
	maxBlock      = 128 << 10
	maxServeQueue = 1024
)

// readBuffer is a connection's read buffer: a whole block (blockSize)
// and its header, with room for the messages that follow it.
const readBuffer = blockSize + 4<<10

var blockBufs = sync.Pool{New: func() any { b := make([]byte, maxBlock); return &b }}

func newPeerConn(t *transfer, conn net.Conn, addr netip.AddrPort, id [20]byte, outgoing bool) *peerConn {
	now := time.Now()
	c := &peerConn{t: t, conn: conn, addr: addr, id: id, outgoing: outgoing, since: now, gone: make(chan struct{}),
		agent: string(id[:3]) == agentPeerIDPrefix[:3], origin: outgoing && isOriginPeerID(id),
		has: newBitset(t.n), choked: true, wake: make(chan struct{}, 1)}
	c.lazyWait = lazyDelay(t)
	if sc, ok := conn.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	c.lastRead.Store(now.Unix())
	c.lastWrite.Store(now.Unix())
	return c
}

// queue sends m: at once from this goroutine, with the lazy messages, when
// the socket is free and the writer holds nothing queued earlier; else (or
// what the socket did not take) by the writer, signalled. A message is
// mostly a reader's answer to the block or Have it just handled, and each
// wake-up of the writer for it cost the scheduler more than the write.
func (c *peerConn) queue(m pp.Message) {
	c.wmu.Lock()
	c.out = appendMessage(c.out, m)
	if c.raw == nil || c.held || !c.sendMu.TryLock() {
		c.wmu.Unlock()
		c.signal()
		return
	}
	b := c.takeLazyLocked(c.out)
	c.out = c.dspare[:0]
	c.wmu.Unlock()
	n := c.writeNow(b)
	if n < len(b) {
		// The socket is full (or failed): the rest goes first, by the
		// writer, which finds the error if there is one.
		c.wmu.Lock()
		c.out = append(append([]byte(nil), b[n:]...), c.out...)
		c.wmu.Unlock()
		c.signal()
	}
	c.dspare = b[:0]
	c.sendMu.Unlock()
}

// writeNow writes b without waiting for the socket to take it, and
// returns how much it took. c.sendMu is held.
func (c *peerConn) writeNow(b []byte) int {
	n := 0
	_ = c.raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			k, err := syscall.Write(int(fd), b[n:])
			if err == syscall.EINTR {
				continue
			}
			if err != nil || k <= 0 {
				break
			}
			n += k
		}
		return true // never wait: what is left is the writer's
	})
	if n > 0 {
		c.lastWrite.Store(time.Now().Unix())
	}
	return n
}

// wrote ends a write of bytes the writer took from out: direct writes may
// go again.
func (c *peerConn) wrote() {
	c.wmu.Lock()
	c.held = false
	c.wmu.Unlock()
}

// queueLazy appends m to what the writer sends with its next write, or
// after haveDelay at the latest. At 32 KiB pieces the Haves were half of an
// agent's socket writes (and as many wake-ups and reads at the other end);
// most can ride with a request or a block a little later without the peer
// missing anything it would ask for (see transfer.haveMayWaitLocked).
func (c *peerConn) queueLazy(m pp.Message) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.armLazyLocked()
	c.lazy = appendMessage(c.lazy, m)
}

// armLazyLocked starts the lazy timer unless lazy messages already wait
// on it. c.wmu is held.
func (c *peerConn) armLazyLocked() {
	if c.lazyArmed {
		return
	}
	c.lazyArmed = true
	if c.lazyTimer == nil {
		c.lazyTimer = time.AfterFunc(c.lazyWait, c.lazyExpired)
	} else {
		c.lazyTimer.Reset(c.lazyWait)
	}
}

// haveDelay is how long a lazy Have may wait for another write. N = 64 at
// 1 MB/s (32 KiB pieces), every Have to an agent with 4 other pieces to
// ask for waiting: 30 ms saved 5 % of the writes, 100 ms 27 %, 300 ms
// 34 %, 1 s 36 % (and cost 0.02x of the median time).
const haveDelay = 300 * time.Millisecond

// lazyDelay is how long t's lazy messages may wait: haveDelay, or on a
// slow upload link the time lazyHaveSpare pieces take at our upload cap. A
// Have waits only to an agent lacking that many other pieces of ours (or to
// an origin, which only counts copies), and the agent cannot take them
// faster than we upload, so it does not run out of pieces to ask us for
// meanwhile. N = 256 at 0.125 MB/s (32 KiB pieces, a piece every 262 ms at
// the cap, a block to each neighbour every 1-2 s): with haveDelay, 984k
// writes for 131k blocks, most lazy Haves going out alone; with this, a
// fifth fewer writes and CPU. At most maxHaveDelay: large pieces on a slow
// link (4 MiB at 1 MB/s: 17 s) would hold an origin's count of the copies
// back past the time after which it takes a piece whose only holder left
// for lost (superseed's lostAfter, at least 5 s) and sends it again.
func lazyDelay(t *transfer) time.Duration {
	if t.e == nil {
		return haveDelay
	}
	spare, _ := atCap(t.e.up, lazyHaveSpare*t.plen)
	return min(max(haveDelay, spare), maxHaveDelay)
}

// maxHaveDelay caps lazyDelay.
const maxHaveDelay = 2 * time.Second

// atCap is how long n bytes take at l's rate; 0 and false when l is nil
// or uncapped.
func atCap(l *rate.Limiter, n int64) (time.Duration, bool) {
	if l == nil || l.Limit() <= 0 || l.Limit() == rate.Inf {
		return 0, false
	}
	return time.Duration(float64(n) / float64(l.Limit()) * float64(time.Second)), true
}

// setInterest tells the peer whether we are interested: Interested at
// once (our requests follow it), NotInterested the way of a lazy Have. Two
// agents at the same progress flip for every piece one of them gets (N = 64
// at 1 MB/s: 14k NotInterested of 220k writes, each written alone), and
// a flip back before the NotInterested went out cancels it.
func (c *peerConn) setInterest(on bool) {
	c.wmu.Lock()
	if !on {
		if c.told && !c.untell {
			c.untell = true
			c.armLazyLocked()
		}
		c.wmu.Unlock()
		return
	}
	c.untell = false
	tell := !c.told
	if tell {
		c.told = true
		c.out = appendMessage(c.out, pp.Message{Type: pp.Interested})
	}
	c.wmu.Unlock()
	if tell {
		c.signal()
	}
}

func (c *peerConn) lazyExpired() {
	c.wmu.Lock()
	c.lazyArmed = false
	c.lazyDue = len(c.lazy) > 0 || c.untell
	c.wmu.Unlock()
	c.signal()
}

// writesSoonLocked reports whether a block for the peer is queued or on
// its way, so that a lazy message will ride with it. c.wmu is held.
func (c *peerConn) writesSoonLocked() bool { return c.serving || len(c.serve) > 0 }

// takeLazyLocked appends the lazy messages to b. c.wmu is held.
func (c *peerConn) takeLazyLocked(b []byte) []byte {
	if len(c.lazy) > 0 || c.untell {
		b = append(b, c.lazy...)
		if c.untell {
			b = appendMessage(b, pp.Message{Type: pp.NotInterested})
			c.told, c.untell = false, false
		}
		c.lazy = c.lazy[:0]
	}
	if c.lazyArmed {
		c.lazyTimer.Stop()
		c.lazyArmed = false
	}
	c.lazyDue = false
	return b
}

func (c *peerConn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// stallAfter is how long c may sit on our request for a block of size
// bytes before it is asked of others: four of c's usual gaps between
// blocks, and at least stallBlocks times what such a block takes at our
// download cap, minStall to maxStall. The second term is for slow links:
// upload turns serve the peers behind first, so a peer ahead waits its
// turn at an uploader whose cap is about ours for several blocks, which
// is no stall; with minStall alone, at 64 KB/s (a 32 KiB block in 0.5 s)
// such waits were cut short and the peer snubbed, and N = 256 took
// 1.11-1.12x instead of 1.10x. t.mu is held.
func (c *peerConn) stallAfter(size int64) time.Duration {
	block, _ := atCap(c.t.e.down, size)
	return min(max(minStall, 4*c.blockGap, stallBlocks*block), maxStall)
}

const (
	minStall = 1500 * time.Millisecond
	// maxStall is as long as a silent connection is kept (idleTimeout).
	// Below a busy uploader's pace it cut its turns short: on a slow link
	// an uploader serves the peers asking it a block each in turn, those
	// behind first, and at 6.4 KB/s six of them take 30 s a round; with
	// 30 s here the simulator's N = 1,000 moved a third of all requests
	// and took 1.206x / 1.391x, with 3 min 1.101x / 1.113x (5 % moved).
	maxStall    = idleTimeout
	stallBlocks = 8
)

// gotBlock updates the gap average. t.mu is held.
func (c *peerConn) gotBlock(now time.Time, asked time.Time) {
	since := c.lastBlock
	if asked.After(since) {
		since = asked
	}
	gap := now.Sub(since)
	if c.blockGap == 0 {
		c.blockGap = gap
	} else {
		c.blockGap = (4*c.blockGap + gap) / 5
	}
	c.lastBlock = now
	c.snubbedUntil = time.Time{}
}

// requested reports whether a request for the block is in flight to c.
// t.mu is held.
func (c *peerConn) requested(piece, block int) bool {
	return slices.ContainsFunc(c.reqs, func(r blockReq) bool { return r.piece == piece && r.block == block })
}

// dropRequest forgets c's request for the block, if any. t.mu is held.
func (c *peerConn) dropRequest(piece, block int) bool {
	k := slices.IndexFunc(c.reqs, func(r blockReq) bool { return r.piece == piece && r.block == block })
	if k < 0 {
		return false
	}
	c.reqs = slices.Delete(c.reqs, k, k+1)
	return true
}

// appendMessage encodes the messages a transfer sends (Piece is written by
// the writer straight from its buffer).
func appendMessage(b []byte, m pp.Message) []byte {
	u32 := func(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }
	if m.Keepalive {
		return u32(b, 0)
	}
	switch m.Type {
	case pp.Choke, pp.Unchoke, pp.Interested, pp.NotInterested:
		return append(u32(b, 1), byte(m.Type))
	case pp.Have:
		return u32(append(u32(b, 5), byte(pp.Have)), uint32(m.Index))
	case pp.Request, pp.Cancel:
		b = append(u32(b, 13), byte(m.Type))
		return u32(u32(u32(b, uint32(m.Index)), uint32(m.Begin)), uint32(m.Length))
	case pp.Extended:
		b = append(u32(b, uint32(2+len(m.ExtendedPayload))), byte(pp.Extended), byte(m.ExtendedID))
		return append(b, m.ExtendedPayload...)
	case pp.Bitfield:
		n := (len(m.Bitfield) + 7) / 8
		b = append(u32(b, uint32(1+n)), byte(pp.Bitfield))
		start := len(b)
		b = append(b, make([]byte, n)...)
		for i, ok := range m.Bitfield {
			if ok {
				b[start+i/8] |= 0x80 >> (i % 8)
			}
		}
		return b
	}
	panic(fmt.Sprintf("p2p: appendMessage: %v", m.Type))
}

// writeLoop sends queued messages and the blocks the peer asked for.
func (c *peerConn) writeLoop() error {
	var spare []byte
	var hdr [13]byte
	up := c.t.e.up
	for {
		c.wmu.Lock()
		for len(c.out) == 0 && len(c.serve) == 0 && !c.lazyDue {
			c.wmu.Unlock()
			select {
			case <-c.wake:
			case <-c.gone:
				return nil
			}
			c.wmu.Lock()
		}
		out := c.takeLazyLocked(c.out)
		c.out = spare[:0]
		c.held = len(out) > 0
		var rs pp.RequestSpec
		serving := len(c.serve) > 0
		if serving {
			rs = c.serve[0]
			c.serve = c.serve[1:]
			c.serving, c.current, c.cancelled = true, rs, false
		}
		c.wmu.Unlock()
		if serving {
			var err error
			if up != nil {
				err = c.awaitUpload(up, int(rs.Length), &out)
			}
			// Lazy Haves queued meanwhile ride with the block (or go
			// alone if the peer cancelled it).
			c.wmu.Lock()
			out = c.takeLazyLocked(out)
			c.held = len(out) > 0
			c.serving = false
			c.wmu.Unlock()
			if errors.Is(err, errCancelled) {
				serving = false
			} else if err != nil {
				return err
			}
		}
		if !serving {
			if err := c.write(out); err != nil {
				return err
			}
			c.wrote()
			spare = out
			continue
		}
		bp := blockBufs.Get().(*[]byte)
		data := (*bp)[:rs.Length]
		if _, err := c.t.st.ReadAt(data, int64(rs.Index)*c.t.plen+int64(rs.Begin)); err != nil {
			blockBufs.Put(bp)
			return fmt.Errorf("read piece %d: %w", rs.Index, err)
		}
		binary.BigEndian.PutUint32(hdr[0:], uint32(9+rs.Length))
		hdr[4] = byte(pp.Piece)
		binary.BigEndian.PutUint32(hdr[5:], uint32(rs.Index))
		binary.BigEndian.PutUint32(hdr[9:], uint32(rs.Begin))
		bufs := net.Buffers{out, hdr[:], data}
		c.sendMu.Lock()
		_, err := bufs.WriteTo(c.conn)
		c.sendMu.Unlock()
		c.wrote()
		blockBufs.Put(bp)
		if err != nil {
			return err
		}
		c.lastWrite.Store(time.Now().Unix())
		c.served.Store(true)
		c.t.up.Add(int64(rs.Length))
		c.t.e.sent.Add(int64(rs.Length))
		spare = out
	}
}

// awaitUpload waits until a block of n bytes may go at the node's upload
// cap. The blocks of all connections take turns (engine.upTurn), the one
// for the peer furthest behind first: first come, an agent whose uploaders
// each served more peers than average fell behind the rest and never made
// it up (64 agents, a quarter at R/4: the slowest 1.35-1.61x of its bound
// first come, 1.10-1.18x in five runs of six this way; the simulator's
// N = 1,000: 1.23x, 1.13x). The turn is held while the tokens are waited
// for, never during the write, so the next block is chosen when the cap
// is free for it and a stalled peer holds no turn. Our own requests and
// Haves, out first, then any queued meanwhile, are written while the
// block waits.
func (c *peerConn) awaitUpload(up *rate.Limiter, n int, out *[]byte) error {
	flush := func() error {
		err := c.write(*out)
		*out = (*out)[:0]
		c.wrote()
		return err
	}
	tk := c.t.e.upTurn.Take(c.behind)
	select {
	case <-tk.Ready():
	default:
		// Peers behind may go first for long: a peer that meanwhile asked
		// another for the block (its stall rule) cancels it here, and it
		// is not sent twice.
		if err := flush(); err != nil {
			c.t.e.upTurn.Cancel(tk)
			return err
		}
		if err := waitFlushing(c, tk.Ready()); err != nil {
			c.t.e.upTurn.Cancel(tk)
			return err
		}
	}
	defer c.t.e.upTurn.Release()
	d, cancel := reserveN(up, time.Now(), n)
	if d <= 0 {
		return nil
	}
	if err := flush(); err != nil {
		cancel()
		return err
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	if err := waitFlushing(c, timer.C); err != nil {
		cancel()
		return err
	}
	return nil
}

// behind orders the blocks waiting for the upload cap (engine.upTurn): the
// fraction of the blob the peer holds, as its Haves told us, after the
// peers whose upload cap is under half ours (slower), but for a slower
// peer's first block from us. A slower peer's first request is mostly
// for the piece its client waits on (the in-order prefix is asked first),
// and at U = R a faster uploader's turns are never free: with every block
// last, a slow agent's first byte waited at fast holders, its request
// moved from one to the next, for up to 10.5 s of its 67 s (8 slow pulls
// of 528 over 2 s, N = 64, a quarter at R/4; none of 256 since). A block
// a connection is a few tenths of a second of the slow link.
func (c *peerConn) behind() uint64 {
	k := uint64(c.hasN.Load()) << 32 / uint64(max(1, c.t.n))
	if c.slower() && c.served.Load() {
		k += 1 << 33
	}
	return k
}

// waitFlushing waits for done, writing control messages queued meanwhile.
func waitFlushing[T any](c *peerConn, done <-chan T) error {
	var buf []byte
	for {
		select {
		case <-done:
			return nil
		case <-c.gone:
			return errConnGone
		case <-c.wake:
			// Requests the peer queued meanwhile need no signal: the
			// outer loop looks at the queue before it waits.
			c.wmu.Lock()
			buf, c.out = c.takeLazyLocked(c.out), buf[:0]
			c.held = len(buf) > 0
			cancelled := c.cancelled
			c.wmu.Unlock()
			if err := c.write(buf); err != nil {
				return err
			}
			c.wrote()
			if cancelled {
				return errCancelled
			}
		}
	}
}

var (
	errConnGone  = errors.New("p2p: connection closed")
	errCancelled = errors.New("p2p: block cancelled by the peer")
)

// closeAsync closes c's connection without waiting for it: a Close waits
// until the reader's handler returns (wire.ReadMessages), and that handler
// may be waiting for the lock the caller holds.
func (c *peerConn) closeAsync() { go c.conn.Close() }

// write writes b, taken by the writer from out (or its own).
func (c *peerConn) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.sendMu.Lock()
	_, err := c.conn.Write(b)
	c.sendMu.Unlock()
	if err != nil {
		return err
	}
	c.lastWrite.Store(time.Now().Unix())
	return nil
}

// readLoop handles the peer's messages until the connection fails.
func (c *peerConn) readLoop() error {
	t := c.t
	// A block's message and what follows it in one read: at 32 KiB
	// pieces a 32 KiB buffer took two.
	return wire.ReadMessages(c.conn, wire.Options{Buffer: readBuffer, MaxLength: 1<<20 + maxBlock}, func(b []byte) error {
		c.lastRead.Store(time.Now().Unix())
		if len(b) == 0 {
			return nil // keep-alive
		}
		m, err := wire.Decode(b)
		if err != nil {
			return err
		}
		if m.Type == pp.Piece {
			return c.piece(m)
		}
		return c.handle(m, t)
	})
}

func (c *peerConn) piece(m pp.Message) error {
	t := c.t
	if int(m.Index) >= t.n || t.st.dl == nil {
		return fmt.Errorf("block of piece %d: not asked for", m.Index)
	}
	if down := t.e.down; down != nil {
		if err := WaitN(t.ctx, down, len(m.Piece)); err != nil {
			return err
		}
	}
	t.received(c, int(m.Index), int64(m.Begin), m.Piece)
	return nil
}

func (c *peerConn) handle(m pp.Message, t *transfer) error {
	switch m.Type {
	case pp.Request:
		rs := m.RequestSpec()
		t.mu.Lock()
		ok := int(rs.Index) < t.n && t.have.get(int(rs.Index)) && rs.Length > 0 && rs.Length <= maxBlock &&
			int64(rs.Begin)+int64(rs.Length) <= t.pieceLen(int(rs.Index))
		t.mu.Unlock()
		if !ok {
			return fmt.Errorf("bad request %v", rs)
		}
		c.wmu.Lock()
		full := len(c.serve) >= maxServeQueue
		if !full {
			c.serve = append(c.serve, rs)
		}
		c.wmu.Unlock()
		if full {
			return fmt.Errorf("more than %d requests queued", maxServeQueue)
		}
		c.signal()
		return nil
	case pp.Extended:
		c.gotExtended(m)
		return nil
	case pp.Cancel:
		rs := m.RequestSpec()
		c.wmu.Lock()
		if k := slices.Index(c.serve, rs); k >= 0 {
			c.serve = slices.Delete(c.serve, k, k+1)
		} else if c.serving && c.current == rs {
			c.cancelled = true
		}
		c.wmu.Unlock()
		c.signal()
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c.closed {
		return errConnGone
	}
	switch m.Type {
	case pp.Choke:
		c.choked = true
		t.returnRequestsLocked(c)
		t.fillAllLocked()
	case pp.Unchoke:
		c.choked = false
		t.fillLocked(c)
	case pp.Interested:
		c.peerInterested = true
	case pp.NotInterested:
		c.peerInterested = false
	case pp.Have:
		if int(m.Index) >= t.n {
			return fmt.Errorf("have %d of %d pieces", m.Index, t.n)
		}
		t.peerHasLocked(c, int(m.Index))
		t.fillLocked(c)
	case pp.Bitfield:
		if len(m.Bitfield) < t.n {
			return fmt.Errorf("bitfield of %d pieces, want %d", len(m.Bitfield), t.n)
		}
		for i := range t.n {
			if m.Bitfield[i] {
				t.peerHasLocked(c, i)
			}
		}
		t.fillLocked(c)
	}
	return nil // others (extensions) are not spoken here
}
