package peerstore

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
)

func swarmCount(m *Memory) int {
	n := 0
	for i := range m.shards {
		m.shards[i].mu.Lock()
		n += len(m.shards[i].swarms)
		m.shards[i].mu.Unlock()
	}
	return n
}

func ih(i int) [20]byte {
	var h [20]byte
	h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
	return h
}

// Swarms that nobody asks about again must still be freed once their TTL
// has passed: traffic on other swarms in the same shard sweeps them.
func TestMemorySweepsAbandonedSwarms(t *testing.T) {
	clk := testutil.NewClock(time.Unix(1_700_000_000, 0))
	m := NewMemory(time.Minute, clk.Now)
	ctx := context.Background()
	const abandoned = 5000
	for i := range abandoned {
		p := Peer{IP: netip.MustParseAddr("10.0.0.1"), Port: 1}
		p.ID[0], p.ID[1] = byte(i), byte(i>>8)
		if err := m.Announce(ctx, ih(i), p); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Len(); got != abandoned {
		t.Fatalf("Len = %d, want %d", got, abandoned)
	}
	clk.Advance(2 * time.Minute)
	// One call per shard, on swarms that never existed.
	for s := range shardCount {
		if _, _, err := m.Counts(ctx, ih(1_000_000+s)); err != nil {
			t.Fatal(err)
		}
	}
	if got := m.Len(); got != 0 {
		t.Fatalf("after TTL and a sweep, Len = %d, want 0", got)
	}
	if got := swarmCount(m); got != 0 {
		t.Fatalf("after TTL and a sweep, %d swarms remain", got)
	}
}

func BenchmarkMemoryAnnounce(b *testing.B) {
	m := NewMemory(time.Minute, nil)
	ctx := context.Background()
	peers := make([]Peer, 1000)
	for i := range peers {
		peers[i] = Peer{IP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), Port: 6881, Complete: i%4 == 0}
		peers[i].ID[0], peers[i].ID[1] = byte(i), byte(i>>8)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h := ih(i % 64)
		p := peers[i%len(peers)]
		_ = m.Announce(ctx, h, p)
		_, _ = m.Peers(ctx, h, 50)
		_, _, _ = m.Counts(ctx, h)
		i++
	}
}
