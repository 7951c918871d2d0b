package peerstore_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/tracker/peerstore"
	"github.com/shoal-dev/shoal/tracker/peerstore/storetest"
)

func newRedis(t testing.TB, addr, prefix string, now func() time.Time) *peerstore.Redis {
	s := peerstore.NewRedis(peerstore.RedisOptions{Addr: addr, KeyPrefix: prefix, TTL: storetest.TTL, Now: now})
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// The Redis store passes the suite the memory store passes; each case has
// a key prefix of its own on one shared server.
func TestRedisConformance(t *testing.T) {
	srv := testutil.StartRedis(t)
	storetest.Run(t, func(t *testing.T, now func() time.Time) peerstore.Store {
		return newRedis(t, srv.Addr, "test:"+t.Name()+":", now)
	})
}

// A peer's entry survives the store that wrote it: a second store (another
// tracker replica) on the same keys sees it, with the same TTL.
func TestRedisSharedByTwoStores(t *testing.T) {
	srv := testutil.StartRedis(t)
	clk := &storetest.Clock{}
	a := newRedis(t, srv.Addr, "shared:", clk.Now)
	b := newRedis(t, srv.Addr, "shared:", clk.Now)
	other := newRedis(t, srv.Addr, "other:", clk.Now)
	ctx := context.Background()
	ih := storetest.InfoHash(1)
	p := storetest.MakePeer(1, true)
	if err := a.Announce(ctx, ih, p); err != nil {
		t.Fatal(err)
	}
	if ps, err := b.Peers(ctx, ih, 10); err != nil || len(ps) != 1 || ps[0] != p {
		t.Fatalf("b.Peers = %+v, %v; want [%+v]", ps, err, p)
	}
	if c, i, err := other.Counts(ctx, ih); err != nil || c+i != 0 {
		t.Fatalf("a store under another prefix sees (%d, %d), %v", c, i, err)
	}
	clk.Advance(storetest.TTL)
	if c, i, err := b.Counts(ctx, ih); err != nil || c+i != 0 {
		t.Fatalf("after the TTL b counts (%d, %d), %v", c, i, err)
	}
}

// With the server gone, calls fail within OpTimeout instead of hanging, and
// work again once it is back.
func TestRedisUnavailable(t *testing.T) {
	srv := testutil.StartRedis(t)
	s := peerstore.NewRedis(peerstore.RedisOptions{Addr: srv.Addr, TTL: time.Minute, OpTimeout: 300 * time.Millisecond})
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	ih, p := storetest.InfoHash(1), storetest.MakePeer(1, false)
	if err := s.Announce(ctx, ih, p); err != nil {
		t.Fatal(err)
	}
	srv.Freeze() // a hung server: only the timeouts end the calls
	start := time.Now()
	if _, _, err := s.Counts(ctx, ih); err == nil {
		t.Fatal("counts succeeded with the server frozen")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a call to a frozen server took %s, OpTimeout is 300ms", d)
	}
	srv.Thaw()
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Announce(ctx, ih, p) == nil },
		"announce still failing after the server thawed")

	srv.Kill()
	start = time.Now()
	if err := s.Announce(ctx, ih, p); err == nil {
		t.Fatal("announce succeeded with the server down")
	}
	if err := s.Ping(ctx); err == nil {
		t.Fatal("ping succeeded with the server down")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("two failing calls took %s", d)
	}
	srv.Restart()
	testutil.Eventually(t, 10*time.Second, func() bool { return s.Announce(ctx, ih, p) == nil },
		"announce still failing after the server came back")
	if c, i, err := s.Counts(ctx, ih); err != nil || c != 0 || i != 1 {
		t.Fatalf("Counts after restart = (%d, %d), %v; want (0, 1)", c, i, err)
	}
}

func benchPeers() []peerstore.Peer {
	peers := make([]peerstore.Peer, 1000)
	for i := range peers {
		peers[i] = peerstore.Peer{IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 6881, Complete: i%4 == 0}
		copy(peers[i].ID[:], fmt.Sprintf("-SH0001-%012d", i))
	}
	return peers
}

// BenchmarkAnnounce is one tracker announce (record, sample 50, count) on
// 1000 peers over 64 swarms, per store: memory, Redis in three calls as a
// plain Store, and Redis in one round trip (what the tracker does).
func BenchmarkAnnounce(b *testing.B) {
	peers := benchPeers()
	run := func(b *testing.B, s peerstore.Store, oneStep bool) {
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			h := storetest.InfoHash(i % 64)
			p := peers[i%len(peers)]
			if oneStep {
				if _, _, _, err := peerstore.AnnounceAndPeers(ctx, s, h, p, 50); err != nil {
					b.Fatal(err)
				}
			} else {
				if err := s.Announce(ctx, h, p); err != nil {
					b.Fatal(err)
				}
				if _, err := s.Peers(ctx, h, 50); err != nil {
					b.Fatal(err)
				}
				if _, _, err := s.Counts(ctx, h); err != nil {
					b.Fatal(err)
				}
			}
			i++
		}
	}
	b.Run("memory", func(b *testing.B) { run(b, peerstore.NewMemory(time.Minute, nil), false) })
	srv := testutil.StartRedis(b)
	b.Run("redis-3-calls", func(b *testing.B) { run(b, newRedis(b, srv.Addr, "bench3:", nil), false) })
	b.Run("redis-1-call", func(b *testing.B) { run(b, newRedis(b, srv.Addr, "bench1:", nil), true) })
}
