package p2p

import (
	"net"
	"testing"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
)

// A message queued while nobody writes to the socket is written by the
// goroutine that queues it, the lazy Haves waiting riding after it: here
// no writer runs at all, and the peer still gets both.
func TestQueuedMessageIsWrittenByTheCaller(t *testing.T) {
	c, dec, far, _ := connPair(t, &transfer{e: &engine{}, n: 16})
	c.queueLazy(pp.Message{Type: pp.Have, Index: 3})
	c.queue(pp.Message{Type: pp.Have, Index: 7})
	_ = far.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []pp.Integer{7, 3} {
		var m pp.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("waiting for the Have of %d: %v (no writer runs: the caller must write it)", want, err)
		}
		if m.Type != pp.Have || m.Index != want {
			t.Fatalf("got %v %d, want the Have of %d", m.Type, m.Index, want)
		}
	}
}

// While the writer holds bytes queued earlier, a message waits for it (it
// would pass them); and what the socket does not take at once (the peer
// reads nothing) is left to the writer, ahead of what is queued after it:
// the peer gets everything, in order.
func TestDirectWritesKeepTheOrder(t *testing.T) {
	const n = 1 << 22 // a bitfield of 512 KiB, more than the socket takes unread
	c, dec, far, start := connPair(t, &transfer{e: &engine{}, n: n})
	dec.MaxLength = n
	// Small socket buffers, whatever the machine's defaults.
	if err := c.conn.(*net.TCPConn).SetWriteBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	if err := far.(*net.TCPConn).SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	c.wmu.Lock()
	c.held = true // as if the writer had taken a message and not written it yet
	c.wmu.Unlock()
	c.queue(pp.Message{Type: pp.Have, Index: 1})
	c.wmu.Lock()
	waiting := len(c.out) > 0
	c.held = false
	c.wmu.Unlock()
	if !waiting {
		t.Fatal("a message went past bytes the writer held")
	}
	bf := make([]bool, n)
	bf[5], bf[n-1] = true, true
	c.queue(pp.Message{Type: pp.Bitfield, Bitfield: bf}) // with the Have: part written, the rest left
	c.wmu.Lock()
	left := len(c.out)
	c.wmu.Unlock()
	if left == 0 {
		t.Fatalf("the socket took the whole %d-byte bitfield unread; the test wants it to take part", n/8)
	}
	c.queue(pp.Message{Type: pp.Have, Index: 9})
	start()
	_ = far.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []string
	for range 3 {
		var m pp.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		switch m.Type {
		case pp.Have:
			got = append(got, "have "+string(rune('0'+m.Index)))
		case pp.Bitfield:
			if len(m.Bitfield) < n || !m.Bitfield[5] || !m.Bitfield[n-1] || m.Bitfield[6] {
				t.Fatal("the bitfield arrived altered")
			}
			got = append(got, "bitfield")
		}
	}
	if want := []string{"have 1", "bitfield", "have 9"}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("the peer got %v, want %v", got, want)
	}
}
