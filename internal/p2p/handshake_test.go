package p2p

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
)

// A peer that closes a node's plain handshake (as a full peer does) must
// not be dialled again at once for an MSE handshake: that retry is a second
// dial and a Diffie-Hellman exchange per refused connection, and refused
// connections are common in a big swarm. Every connection the node opens
// starts with the plain protocol header.
func TestNodeDialsPlainHandshakesOnly(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var (
		mu      sync.Mutex
		headers []string
		seen    = make(chan struct{}, 100)
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			h := make([]byte, len(pp.Protocol))
			_, err = io.ReadFull(c, h)
			c.Close() // refused, whatever it said
			if err != nil {
				h = []byte("(short: " + err.Error() + ")")
			}
			mu.Lock()
			headers = append(headers, string(h))
			mu.Unlock()
			seen <- struct{}{}
		}
	}()

	blob, mi := testBlobMeta(t, 1<<20, 64<<10)
	n := newTestNode(t, Config{})
	downloadFromAddr(t, n, ln.Addr().(*net.TCPAddr), blob, mi)

	select {
	case <-seen:
	case <-time.After(20 * time.Second):
		t.Fatal("the node never dialled the peer")
	}
	// A retry with MSE would follow the refusal at once; give it time to.
	select {
	case <-seen:
	case <-time.After(2 * time.Second):
	}
	mu.Lock()
	defer mu.Unlock()
	plain := pp.Protocol
	for i, h := range headers {
		if h != plain {
			t.Errorf("connection %d opened with %q, want the plain header %q", i+1, h, plain)
		}
	}
}
