package p2p

import (
	"bytes"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

var (
	honest = netip.MustParseAddr("127.0.0.20")
	liar   = netip.MustParseAddr("127.0.0.21")
	other  = netip.MustParseAddr("127.0.0.22")
)

func TestBlameSingleContributorIsBannedAtOnce(t *testing.T) {
	b := newBlame()
	b.received(3, 0, liar, []byte("bad!"))
	b.received(3, 4, liar, []byte("bad?"))
	if got := b.hashFailed(3); !slices.Equal(got, []netip.Addr{liar}) {
		t.Fatalf("hashFailed = %v, want [%v]", got, liar)
	}
	// The piece is fetched again from an honest peer: nobody else is blamed.
	b.received(3, 0, honest, []byte("good"))
	b.received(3, 4, honest, []byte("data"))
	if got := b.verified(3, func(p []byte, off int64) error { return nil }); got != nil {
		t.Fatalf("verified after a clean refetch blamed %v", got)
	}
}

func TestBlameSmartBanFindsTheLiarAmongSeveral(t *testing.T) {
	good := []byte("0123456789abcdef")
	b := newBlame()
	b.received(1, 0, honest, good[:8])
	b.received(1, 8, liar, []byte("XXXXXXXX"))
	if got := b.hashFailed(1); got != nil {
		t.Fatalf("two contributors: hashFailed banned %v at once", got)
	}
	// Refetched: the honest peer again, the second half from a third peer.
	b.received(1, 0, honest, good[:8])
	b.received(1, 8, other, good[8:])
	read := func(p []byte, off int64) error { copy(p, good[off:]); return nil }
	if got := b.verified(1, read); !slices.Equal(got, []netip.Addr{liar}) {
		t.Fatalf("verified = %v, want only the liar %v", got, liar)
	}
	if len(b.blocks) != 0 || len(b.failed) != 0 {
		t.Fatalf("records kept after verification: %v %v", b.blocks, b.failed)
	}
	// A piece that verifies the first time blames nobody and costs no read.
	b.received(2, 0, liar, good)
	if got := b.verified(2, func([]byte, int64) error { t.Fatal("read"); return nil }); got != nil {
		t.Fatalf("first-time verification blamed %v", got)
	}
}

func TestBanListExpires(t *testing.T) {
	l := newBanList()
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	if !l.ban(liar, time.Minute) || l.ban(liar, time.Minute) {
		t.Fatal("ban should report only the first ban as new")
	}
	if _, ok := l.Lookup(liar.AsSlice()); !ok || l.NumRanges() != 1 {
		t.Fatal("banned peer not blocked")
	}
	if _, ok := l.Lookup(netip.MustParseAddr("::ffff:127.0.0.21").AsSlice()); !ok {
		t.Fatal("the v4-in-v6 form of a banned peer is not blocked")
	}
	if _, ok := l.Lookup(honest.AsSlice()); ok {
		t.Fatal("honest peer blocked")
	}
	now = now.Add(time.Minute + time.Second)
	if _, ok := l.Lookup(liar.AsSlice()); ok || l.NumRanges() != 0 {
		t.Fatal("ban outlived its time")
	}
	if !l.ban(liar, time.Minute) {
		t.Fatal("a new ban after expiry is not reported as new")
	}
}

func TestBlameConcurrentUse(t *testing.T) {
	b := newBlame()
	data := bytes.Repeat([]byte{7}, 16<<10)
	var wg sync.WaitGroup
	for piece := range 8 {
		wg.Go(func() {
			for blk := range 16 {
				b.received(piece, int64(blk)*int64(len(data)), honest, data)
			}
			if piece%2 == 0 {
				b.hashFailed(piece)
			}
			b.verified(piece, func(p []byte, off int64) error { copy(p, data); return nil })
		})
	}
	wg.Wait()
	if len(b.blocks) != 0 {
		t.Fatalf("records left: %d pieces", len(b.blocks))
	}
}
