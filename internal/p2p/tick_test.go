package p2p

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// A transfer over conns_per_torrent (it took peers that dialled it while it
// downloads) drops a connection neither side has wanted anything from at
// every tick for uselessAfter: not one idle at a single tick (at the
// swarm's front two agents often hold the same pieces for a moment, and the
// rule dropped an agent's best uploader so), and never an origin's, which
// is outside the cap (the rule dropped it and the agent dialled it again
// at once: 59-83 times a run at N = 128, warm).
func TestTickDropsOnlyConnectionsIdleForUselessAfter(t *testing.T) {
	const n = 16
	tr := &transfer{e: &engine{cfg: Config{ConnsPerTorrent: 1}}, n: n, have: newBitset(n), avail: make([]int32, n),
		conns: map[*peerConn]struct{}{}, peers: map[netip.AddrPort]*candidate{}}
	now := time.Now()
	conn := func(prefix, ip string, outgoing bool) *peerConn {
		near, far := net.Pipe()
		t.Cleanup(func() { near.Close(); far.Close() })
		var id [20]byte
		copy(id[:], prefix)
		c := newPeerConn(tr, near, netip.MustParseAddrPort(ip+":6881"), id, outgoing)
		c.since = now.Add(-time.Minute) // connected long ago
		tr.conns[c] = struct{}{}
		return c
	}
	origin := conn(OriginPeerIDPrefix, "127.0.0.2", true)
	steady := conn(agentPeerIDPrefix, "127.0.0.10", false) // idle at every tick
	flicker := conn(agentPeerIDPrefix, "127.0.0.11", false)
	kept := func(when string, want ...*peerConn) {
		t.Helper()
		if len(tr.conns) != len(want) {
			t.Fatalf("%s: %d connections kept, want %d", when, len(tr.conns), len(want))
		}
		for _, c := range want {
			if _, ok := tr.conns[c]; !ok {
				t.Fatalf("%s: the connection to %v was dropped", when, c.addr)
			}
		}
	}

	tr.tick(now)
	kept("idle at the first tick", origin, steady, flicker)
	flicker.interested = true
	tr.tick(now.Add(uselessAfter / 2))
	kept("half of uselessAfter on", origin, steady, flicker)
	flicker.interested = false
	tr.tick(now.Add(uselessAfter + time.Second))
	kept("uselessAfter on", origin, flicker)
	tr.tick(now.Add(3 * uselessAfter))
	kept("within the cap", origin, flicker)
}
