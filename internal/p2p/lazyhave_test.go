package p2p

import (
	"bufio"
	"net"
	"net/netip"
	"testing"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
	"golang.org/x/time/rate"
)

// lazyPair is a peerConn whose writer runs on one end of a loopback TCP
// connection, and a decoder on the other end.
func lazyPair(t *testing.T) (*peerConn, *pp.Decoder, net.Conn) {
	t.Helper()
	return lazyPairOf(t, &transfer{e: &engine{}, n: 16})
}

// lazyPairOf is lazyPair on a transfer of the caller's.
func lazyPairOf(t *testing.T, tr *transfer) (*peerConn, *pp.Decoder, net.Conn) {
	t.Helper()
	c, dec, far, start := connPair(t, tr)
	start()
	return c, dec, far
}

// connPair is a peerConn of tr on one end of a loopback TCP connection and
// a decoder on the other; start runs the peerConn's writer.
func connPair(t *testing.T, tr *transfer) (c *peerConn, dec *pp.Decoder, far net.Conn, start func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	far, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	near, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var id [20]byte
	copy(id[:], agentPeerIDPrefix)
	c = newPeerConn(tr, near, netip.MustParseAddrPort("127.0.0.1:1"), id, false)
	done := make(chan struct{})
	started := false
	start = func() {
		started = true
		go func() { defer close(done); _ = c.writeLoop() }()
	}
	t.Cleanup(func() {
		close(c.gone)
		near.Close()
		far.Close()
		if started {
			<-done
		}
	})
	return c, &pp.Decoder{R: bufio.NewReader(far), MaxLength: 1 << 20}, far, start
}

// TestLazyHavesRideWithTheNextWrite: Haves queued lazily go out with the
// next message that is written at once, in the same write.
func TestLazyHavesRideWithTheNextWrite(t *testing.T) {
	c, dec, far := lazyPair(t)
	c.queueLazy(pp.Message{Type: pp.Have, Index: 1})
	c.queueLazy(pp.Message{Type: pp.Have, Index: 2})

	// The timer cannot fire early: before haveDelay, nothing is written.
	far.SetReadDeadline(time.Now().Add(haveDelay / 3))
	var m pp.Message
	if err := dec.Decode(&m); err == nil {
		t.Fatalf("got %v before haveDelay; want the Haves held", m)
	}
	// A failed read poisons the bufio.Reader's error state only for that
	// call; the connection itself is still good.
	far.SetReadDeadline(time.Now().Add(10 * time.Second))
	sent := time.Now()
	c.queue(pp.Message{Type: pp.Request, Index: 3, Begin: 0, Length: 16})
	var got []pp.Message
	for len(got) < 3 {
		var m pp.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		got = append(got, m)
	}
	if waited := time.Since(sent); waited >= haveDelay {
		t.Errorf("the request and the Haves took %v; want them written with the request, not after haveDelay", waited)
	}
	kinds := map[pp.MessageType]int{}
	for _, m := range got {
		kinds[m.Type]++
	}
	if kinds[pp.Have] != 2 || kinds[pp.Request] != 1 {
		t.Fatalf("got %v; want two Haves and the request", got)
	}
}

// TestLazyHaveGoesOutAlone: with nothing else to write, a lazy Have is
// written after haveDelay, not never.
func TestLazyHaveGoesOutAlone(t *testing.T) {
	c, dec, far := lazyPair(t)
	m, waited := lazyHaveAlone(t, c, dec, far, 5)
	if m.Type != pp.Have || m.Index != 5 {
		t.Fatalf("got %v; want Have 5", m)
	}
	if waited < haveDelay {
		t.Fatalf("written after %v; want it held for haveDelay (%v)", waited, haveDelay)
	}
	// The next lazy Have is held again (the timer is rearmed).
	if m, waited := lazyHaveAlone(t, c, dec, far, 6); m.Index != 6 || waited < haveDelay {
		t.Fatalf("got %v after %v; want Have 6 after haveDelay", m, waited)
	}
}

// lazyHaveAlone queues a lazy Have of piece i on c, with nothing else to
// write, and returns the message read at the far end and how long it took.
func lazyHaveAlone(t *testing.T, c *peerConn, dec *pp.Decoder, far net.Conn, i int) (pp.Message, time.Duration) {
	t.Helper()
	start := time.Now()
	c.queueLazy(pp.Message{Type: pp.Have, Index: pp.Integer(i)})
	far.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m pp.Message
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m, time.Since(start)
}

// TestLazyHaveWaitsLongerOnASlowLink: behind a slow upload cap a lazy
// Have waits as long as lazyHaveSpare pieces take at the cap (the peer
// cannot run out of pieces to ask us for sooner), not haveDelay.
func TestLazyHaveWaitsLongerOnASlowLink(t *testing.T) {
	const plen = 32 << 10
	slow := &transfer{e: &engine{up: rate.NewLimiter(125_000, maxBlock)}, n: 16, plen: plen}
	want := time.Duration(lazyHaveSpare * plen * float64(time.Second) / 125_000) // 1.05 s
	if got := lazyDelay(slow); got != want {
		t.Fatalf("lazyDelay at 125 kB/s = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		name string
		tr   *transfer
	}{
		{"a 1 MB/s link", &transfer{e: &engine{up: rate.NewLimiter(1_000_000, maxBlock)}, n: 16, plen: plen}},
		{"no upload cap", &transfer{e: &engine{}, n: 16, plen: plen}},
		{"an unlimited limiter", &transfer{e: &engine{up: rate.NewLimiter(rate.Inf, 0)}, n: 16, plen: plen}},
	} {
		if got := lazyDelay(tc.tr); got != haveDelay {
			t.Errorf("%s: lazyDelay = %v, want haveDelay (%v)", tc.name, got, haveDelay)
		}
	}
	// 4 MiB pieces at 1 MB/s would be 17 s.
	large := &transfer{e: &engine{up: rate.NewLimiter(1_000_000, maxBlock)}, n: 16, plen: 4 << 20}
	if got := lazyDelay(large); got != maxHaveDelay {
		t.Errorf("4 MiB pieces at 1 MB/s: lazyDelay = %v, want maxHaveDelay (%v)", got, maxHaveDelay)
	}

	c, dec, far := lazyPairOf(t, slow)
	if m, waited := lazyHaveAlone(t, c, dec, far, 5); m.Type != pp.Have || m.Index != 5 || waited < want {
		t.Fatalf("got %v after %v; want Have 5 held for %v", m, waited, want)
	}
}

// TestHaveMayWait is the rule for who is told of a new piece at once.
func TestHaveMayWait(t *testing.T) {
	const n = 16
	tr := &transfer{n: n, have: newBitset(n)}
	for i := range 8 {
		tr.have.set(i) // we hold 0-7; piece 7 just verified
	}
	peer := func(prefix string, ip string, has ...int) *peerConn {
		var id [20]byte
		copy(id[:], prefix)
		// Origins are dialled (they dial nobody).
		c := newPeerConn(&transfer{n: n}, nil, netip.MustParseAddrPort(ip+":6881"), id, prefix == OriginPeerIDPrefix)
		for _, i := range has {
			c.has.set(i)
		}
		return c
	}
	// A peer that asked us for a block: the Have rides with it.
	asking := func(c *peerConn) *peerConn {
		c.serve = append(c.serve, pp.RequestSpec{Index: 0, Length: 16})
		return c
	}
	origin := peer(OriginPeerIDPrefix, "127.0.0.2")
	p := &partial{from: map[netip.Addr]bool{netip.MustParseAddr("127.0.0.2"): true}}
	other := &partial{from: map[netip.Addr]bool{netip.MustParseAddr("127.0.0.9"): true}}
	for _, tc := range []struct {
		name  string
		c     *peerConn
		p     *partial
		fresh bool
		want  bool
	}{
		{"agent lacking 5 of ours, this one too", peer(agentPeerIDPrefix, "127.0.0.3", 0, 1, 2), p, false, true},
		{"the same, but the piece is fresh", peer(agentPeerIDPrefix, "127.0.0.3", 0, 1, 2), p, true, false},
		{"agent lacking only 4 of ours", peer(agentPeerIDPrefix, "127.0.0.3", 0, 1, 2, 3), p, false, false},
		{"agent lacking nothing else", peer(agentPeerIDPrefix, "127.0.0.3", 0, 1, 2, 3, 4, 5, 6), p, false, false},
		{"agent lacking nothing else, a block of ours queued for it", asking(peer(agentPeerIDPrefix, "127.0.0.3", 0, 1, 2, 3, 4, 5, 6)), p, false, true},
		{"fresh, to an agent with a block of ours queued", asking(peer(agentPeerIDPrefix, "127.0.0.3")), p, true, true},
		{"the origin that sent the piece", origin, p, true, false},
		{"an origin that did not send it", origin, other, false, true},
		{"a plain client", peer("-qB4650-", "127.0.0.4"), other, false, false},
	} {
		if got := tr.haveMayWaitLocked(tc.c, tc.p, tc.fresh); got != tc.want {
			t.Errorf("%s: haveMayWait = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestNotInterestedWaits: Interested goes out at once, NotInterested the
// way of a lazy Have, and a flip back to interested before it went out
// cancels it (two agents at the same progress flip for every piece).
func TestNotInterestedWaits(t *testing.T) {
	c, dec, far := lazyPair(t)
	read := func(within time.Duration) (pp.Message, error) {
		far.SetReadDeadline(time.Now().Add(within))
		var m pp.Message
		err := dec.Decode(&m)
		return m, err
	}
	c.setInterest(true)
	if m, err := read(haveDelay / 3); err != nil || m.Type != pp.Interested {
		t.Fatalf("got %v, %v; want Interested at once", m, err)
	}
	c.setInterest(false)
	c.setInterest(true)
	if m, err := read(haveDelay + haveDelay/2); err == nil {
		t.Fatalf("got %v; want nothing: the NotInterested was taken back", m)
	}
	start := time.Now()
	c.setInterest(false)
	m, err := read(10 * time.Second)
	if err != nil || m.Type != pp.NotInterested {
		t.Fatalf("got %v, %v; want NotInterested", m, err)
	}
	if waited := time.Since(start); waited < haveDelay {
		t.Errorf("NotInterested written after %v; want it held for haveDelay (%v)", waited, haveDelay)
	}
	// Interested again is news at once.
	c.setInterest(true)
	if m, err := read(haveDelay / 3); err != nil || m.Type != pp.Interested {
		t.Fatalf("got %v, %v; want Interested at once", m, err)
	}
}
