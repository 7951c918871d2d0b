// Package storetest is the conformance suite every peerstore.Store
// implementation must pass. An implementation's test calls Run with a
// factory that builds an empty store using the given clock and a TTL of
// exactly TTL.
package storetest

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/tracker/peerstore"
)

// TTL is the entry lifetime the factory must configure.
const TTL = time.Minute

// Factory builds an empty store with a TTL of TTL whose clock is now.
type Factory func(t *testing.T, now func() time.Time) peerstore.Store

// Clock is a manual clock, safe for concurrent use.
type Clock = testutil.Clock

// Run runs the suite, each case on a fresh store.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, s peerstore.Store, clk *Clock)
	}{
		{"AnnounceAndPeers", testAnnounceAndPeers},
		{"UnknownInfoHash", testUnknownInfoHash},
		{"Refresh", testRefresh},
		{"CompletedFirst", testCompletedFirst},
		{"BoundedN", testBoundedN},
		{"RandomSample", testRandomSample},
		{"Remove", testRemove},
		{"TTLExpiry", testTTLExpiry},
		{"SwarmsIsolated", testSwarmsIsolated},
		{"Concurrent", testConcurrent},
		{"AnnounceAndPeers", testAnnounceAndPeers1Step},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := testutil.NewClock(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
			tc.fn(t, newStore(t, clk.Now), clk)
		})
	}
}

// InfoHash returns a distinct info-hash for i.
func InfoHash(i int) [20]byte {
	var h [20]byte
	copy(h[:], fmt.Sprintf("ih-%017d", i))
	return h
}

// MakePeer returns a distinct peer for i on 10.x.y.z:6881+i%1000.
func MakePeer(i int, complete bool) peerstore.Peer {
	var id [20]byte
	copy(id[:], fmt.Sprintf("-SH0001-%012d", i))
	return peerstore.Peer{
		ID:       id,
		IP:       netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
		Port:     uint16(6881 + i%1000),
		Complete: complete,
	}
}

func announce(t *testing.T, s peerstore.Store, ih [20]byte, ps ...peerstore.Peer) {
	t.Helper()
	for _, p := range ps {
		if err := s.Announce(context.Background(), ih, p); err != nil {
			t.Fatalf("Announce(%x): %v", p.ID, err)
		}
	}
}

func peers(t *testing.T, s peerstore.Store, ih [20]byte, n int) []peerstore.Peer {
	t.Helper()
	ps, err := s.Peers(context.Background(), ih, n)
	if err != nil {
		t.Fatalf("Peers: %v", err)
	}
	if len(ps) > n && n >= 0 {
		t.Fatalf("Peers(n=%d) returned %d peers", n, len(ps))
	}
	return ps
}

func wantCounts(t *testing.T, s peerstore.Store, ih [20]byte, complete, incomplete int) {
	t.Helper()
	c, i, err := s.Counts(context.Background(), ih)
	if err != nil {
		t.Fatalf("Counts: %v", err)
	}
	if c != complete || i != incomplete {
		t.Fatalf("Counts = (%d, %d), want (%d, %d)", c, i, complete, incomplete)
	}
}

func byID(ps []peerstore.Peer) map[[20]byte]peerstore.Peer {
	m := make(map[[20]byte]peerstore.Peer, len(ps))
	for _, p := range ps {
		m[p.ID] = p
	}
	return m
}

func testAnnounceAndPeers(t *testing.T, s peerstore.Store, _ *Clock) {
	ih := InfoHash(1)
	v6 := peerstore.Peer{ID: MakePeer(3, false).ID, IP: netip.MustParseAddr("fd00::1"), Port: 65535}
	want := []peerstore.Peer{MakePeer(1, true), MakePeer(2, false), v6}
	announce(t, s, ih, want...)
	got := byID(peers(t, s, ih, 10))
	if len(got) != len(want) {
		t.Fatalf("got %d peers, want %d", len(got), len(want))
	}
	for _, w := range want {
		if g, ok := got[w.ID]; !ok || g != w {
			t.Errorf("peer %x: got %+v, want %+v", w.ID, g, w)
		}
	}
	wantCounts(t, s, ih, 1, 2)
}

func testUnknownInfoHash(t *testing.T, s peerstore.Store, _ *Clock) {
	if ps := peers(t, s, InfoHash(404), 10); len(ps) != 0 {
		t.Fatalf("unknown info-hash: got %d peers", len(ps))
	}
	wantCounts(t, s, InfoHash(404), 0, 0)
	if err := s.Remove(context.Background(), InfoHash(404), MakePeer(1, false).ID); err != nil {
		t.Fatalf("Remove of unknown peer: %v", err)
	}
}

func testRefresh(t *testing.T, s peerstore.Store, _ *Clock) {
	ih := InfoHash(1)
	p := MakePeer(1, false)
	announce(t, s, ih, p)
	wantCounts(t, s, ih, 0, 1)
	p.Port, p.Complete, p.IP = 7000, true, netip.MustParseAddr("10.9.9.9")
	announce(t, s, ih, p)
	ps := peers(t, s, ih, 10)
	if len(ps) != 1 || ps[0] != p {
		t.Fatalf("after refresh got %+v, want [%+v]", ps, p)
	}
	wantCounts(t, s, ih, 1, 0)
	p.Complete = false // a re-download (e.g. after local GC) makes it a leecher again
	announce(t, s, ih, p)
	wantCounts(t, s, ih, 0, 1)
}

func testCompletedFirst(t *testing.T, s peerstore.Store, _ *Clock) {
	ih := InfoHash(1)
	// Interleave so that insertion order cannot explain the result.
	for i := range 10 {
		announce(t, s, ih, MakePeer(i, i%2 == 0))
	}
	for _, n := range []int{3, 5, 7, 10} {
		ps := peers(t, s, ih, n)
		if len(ps) != n {
			t.Fatalf("Peers(n=%d): got %d", n, len(ps))
		}
		for i, p := range ps {
			if wantComplete := i < 5; p.Complete != wantComplete {
				t.Fatalf("Peers(n=%d)[%d].Complete = %v, want %v (completed first): %+v", n, i, p.Complete, wantComplete, ps)
			}
		}
		if len(byID(ps)) != n {
			t.Fatalf("Peers(n=%d) returned duplicates", n)
		}
	}
}

func testBoundedN(t *testing.T, s peerstore.Store, _ *Clock) {
	ih := InfoHash(1)
	for i := range 20 {
		announce(t, s, ih, MakePeer(i, i < 4))
	}
	for _, tc := range []struct{ n, want int }{{0, 0}, {1, 1}, {4, 4}, {19, 19}, {20, 20}, {100, 20}} {
		if got := len(peers(t, s, ih, tc.n)); got != tc.want {
			t.Errorf("Peers(n=%d) returned %d, want %d", tc.n, got, tc.want)
		}
	}
}

func testRandomSample(t *testing.T, s peerstore.Store, _ *Clock) {
	ih := InfoHash(1)
	const total, n = 100, 5
	for i := range total {
		announce(t, s, ih, MakePeer(i, false))
	}
	seen := map[[20]byte]bool{}
	for range 40 {
		for _, p := range peers(t, s, ih, n) {
			seen[p.ID] = true
		}
	}
	// 200 draws from 100 peers: a uniform sample covers ~87 of them; a
	// fixed or sticky choice covers 5. 40 is far from both.
	if len(seen) < 40 {
		t.Fatalf("40 samples of %d from %d peers covered only %d distinct peers", n, total, len(seen))
	}
}

func testRemove(t *testing.T, s peerstore.Store, _ *Clock) {
	ih := InfoHash(1)
	a, b, c := MakePeer(1, true), MakePeer(2, false), MakePeer(3, false)
	announce(t, s, ih, a, b, c)
	if err := s.Remove(context.Background(), ih, b.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	got := byID(peers(t, s, ih, 10))
	if _, ok := got[b.ID]; ok || len(got) != 2 {
		t.Fatalf("after Remove got %v", got)
	}
	wantCounts(t, s, ih, 1, 1)
	for _, p := range []peerstore.Peer{a, c, a} { // the second a is a no-op
		if err := s.Remove(context.Background(), ih, p.ID); err != nil {
			t.Fatalf("Remove: %v", err)
		}
	}
	wantCounts(t, s, ih, 0, 0)
	if ps := peers(t, s, ih, 10); len(ps) != 0 {
		t.Fatalf("all removed, got %+v", ps)
	}
	announce(t, s, ih, b) // a swarm can come back after it emptied
	wantCounts(t, s, ih, 0, 1)
}

func testTTLExpiry(t *testing.T, s peerstore.Store, clk *Clock) {
	ih := InfoHash(1)
	old, fresh := MakePeer(1, true), MakePeer(2, false)
	announce(t, s, ih, old, fresh)
	clk.Advance(TTL / 2)
	announce(t, s, ih, fresh) // refresh extends fresh only
	clk.Advance(TTL/2 - time.Second)
	wantCounts(t, s, ih, 1, 1)
	clk.Advance(2 * time.Second) // old is now past its TTL
	ps := peers(t, s, ih, 10)
	if len(ps) != 1 || ps[0].ID != fresh.ID {
		t.Fatalf("after old's TTL got %+v, want only fresh", ps)
	}
	wantCounts(t, s, ih, 0, 1)
	clk.Advance(TTL)
	if ps := peers(t, s, ih, 10); len(ps) != 0 {
		t.Fatalf("after all TTLs got %+v", ps)
	}
	wantCounts(t, s, ih, 0, 0)
	announce(t, s, ih, old) // an expired peer may come back
	wantCounts(t, s, ih, 1, 0)
}

func testSwarmsIsolated(t *testing.T, s peerstore.Store, _ *Clock) {
	a, b := InfoHash(1), InfoHash(2)
	announce(t, s, a, MakePeer(1, true))
	announce(t, s, b, MakePeer(2, false), MakePeer(3, false))
	wantCounts(t, s, a, 1, 0)
	wantCounts(t, s, b, 0, 2)
	if err := s.Remove(context.Background(), b, MakePeer(1, true).ID); err != nil {
		t.Fatal(err)
	}
	wantCounts(t, s, a, 1, 0)
}

func testConcurrent(t *testing.T, s peerstore.Store, clk *Clock) {
	const workers, perWorker, swarms = 8, 200, 4
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			ctx := context.Background()
			for i := range perWorker {
				ih := InfoHash(i % swarms)
				p := MakePeer(w*perWorker+i, i%3 == 0)
				if err := s.Announce(ctx, ih, p); err != nil {
					errc <- err
					return
				}
				if _, err := s.Peers(ctx, ih, 10); err != nil {
					errc <- err
					return
				}
				if _, _, err := s.Counts(ctx, ih); err != nil {
					errc <- err
					return
				}
				if i%2 == 1 { // drop every odd peer again
					if err := s.Remove(ctx, ih, p.ID); err != nil {
						errc <- err
						return
					}
				}
				if i%50 == 0 {
					clk.Advance(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// Every even i survives: per swarm, workers * perWorker/2/swarms peers,
	// of which those with i%3 == 0 are complete.
	for sw := range swarms {
		var complete, incomplete int
		for i := sw; i < perWorker; i += swarms {
			switch {
			case i%2 == 1:
			case i%3 == 0:
				complete += workers
			default:
				incomplete += workers
			}
		}
		wantCounts(t, s, InfoHash(sw), complete, incomplete)
		if got := len(peers(t, s, InfoHash(sw), 1000)); got != complete+incomplete {
			t.Fatalf("swarm %d: Peers returned %d, want %d", sw, got, complete+incomplete)
		}
	}
}

// peerstore.AnnounceAndPeers (one step on an Announcer, three calls
// otherwise) records the peer and answers like Peers and Counts after it.
func testAnnounceAndPeers1Step(t *testing.T, s peerstore.Store, clk *Clock) {
	ih := InfoHash(1)
	ctx := context.Background()
	expired := MakePeer(99, true)
	announce(t, s, ih, expired)
	clk.Advance(TTL)
	for i := range 6 {
		announce(t, s, ih, MakePeer(i, i < 2))
	}
	self := MakePeer(10, false)
	ps, c, i, err := peerstore.AnnounceAndPeers(ctx, s, ih, self, 4)
	if err != nil {
		t.Fatalf("AnnounceAndPeers: %v", err)
	}
	if c != 2 || i != 5 {
		t.Fatalf("counts = (%d, %d), want (2, 5): the expired seeder must not count", c, i)
	}
	if len(ps) != 4 || !ps[0].Complete || !ps[1].Complete || ps[2].Complete || ps[3].Complete {
		t.Fatalf("peers = %+v, want 2 complete then 2 incomplete", ps)
	}
	if len(byID(ps)) != 4 {
		t.Fatalf("duplicates in %+v", ps)
	}
	ps, c, i, err = peerstore.AnnounceAndPeers(ctx, s, ih, self, 0)
	if err != nil || len(ps) != 0 || c != 2 || i != 5 {
		t.Fatalf("n=0: got %+v (%d, %d), %v; want no peers and (2, 5)", ps, c, i, err)
	}
	ps, _, _, err = peerstore.AnnounceAndPeers(ctx, s, ih, MakePeer(11, true), 100)
	if err != nil || len(ps) != 8 || !ps[0].Complete || !ps[1].Complete || !ps[2].Complete {
		t.Fatalf("n=100: got %+v, %v; want all 8 live peers, the 3 seeders first", ps, err)
	}
	if _, ok := byID(ps)[self.ID]; !ok {
		t.Fatalf("n=100: the announced peer is missing from %+v", ps)
	}
}
