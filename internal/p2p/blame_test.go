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
	if got, _ := b.hashFailed(3, nil); !slices.Equal(got, []netip.Addr{liar}) {
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
	if got, suspect := b.hashFailed(1, nil); got != nil || suspect != honest {
		t.Fatalf("two contributors: hashFailed = %v, %v; want no ban, and a suspect", got, suspect)
	}
	// Refetched: the honest peer again, the second half from a third peer.
	b.received(1, 0, honest, good[:8])
	b.received(1, 8, other, good[8:])
	read := func(p []byte, off int64) error { copy(p, good[off:]); return nil }
	if got := b.verified(1, read); !slices.Equal(got, []netip.Addr{liar}) {
		t.Fatalf("verified = %v, want only the liar %v", got, liar)
	}
	if len(b.pieces) != 0 {
		t.Fatalf("records kept after verification: %v", b.pieces)
	}
	// A piece that verifies the first time blames nobody and costs no read.
	b.received(2, 0, liar, good)
	if got := b.verified(2, func([]byte, int64) error { t.Fatal("read"); return nil }); got != nil {
		t.Fatalf("first-time verification blamed %v", got)
	}
}

// A liar that contributes a block to every attempt, beside an honest peer,
// is never alone in an attempt. blame names a suspect per failed attempt,
// each contributor in turn, the one that sent the most first; held off, the
// next attempt comes from the others. The test plays the library's part:
// the suspect sends nothing in the next attempt.
func TestBlameSuspectBreaksAMixedLoop(t *testing.T) {
	good := []byte("0123456789abcdefghijklmnopqrstuv") // 4 blocks of 8
	lie := bytes.Repeat([]byte("X"), 8)
	read := func(p []byte, off int64) error { copy(p, good[off:]); return nil }
	for _, liarFaster := range []bool{true, false} {
		b := newBlame()
		held := netip.Addr{}
		var banned []netip.Addr
		for attempt := 0; attempt < 4 && banned == nil; attempt++ {
			// Each attempt: the faster peer sends 3 blocks, the other 1;
			// a held peer sends none.
			senders := []netip.Addr{honest, honest, honest, liar}
			if liarFaster {
				senders = []netip.Addr{liar, liar, liar, honest}
			}
			ok := true
			for blk, from := range senders {
				switch held {
				case liar:
					from = honest
				case honest:
					from = liar
				}
				data := good[blk*8 : blk*8+8]
				if from == liar {
					data, ok = lie, false
				}
				b.received(0, int64(blk*8), from, data)
			}
			if ok {
				banned = b.verified(0, read)
				break
			}
			var suspect netip.Addr
			banned, suspect = b.hashFailed(0, nil)
			held = suspect
		}
		if !slices.Equal(banned, []netip.Addr{liar}) {
			t.Fatalf("liar faster %v: banned %v, want only the liar", liarFaster, banned)
		}
	}
	// Every contributor has had its turn: the turns start over.
	b := newBlame()
	var got []netip.Addr
	for range 4 {
		b.received(5, 0, honest, good[:8])
		b.received(5, 8, other, good[8:16])
		_, s := b.hashFailed(5, nil)
		got = append(got, s)
	}
	if !slices.Equal(got, []netip.Addr{honest, other, honest, other}) {
		t.Fatalf("suspects in turn = %v", got)
	}
	// A contributor that is kept off already (banned for another piece)
	// explains the failure: nobody else is held off.
	b.received(6, 0, honest, good[:8])
	b.received(6, 8, liar, lie)
	if ban, s := b.hashFailed(6, func(a netip.Addr) bool { return a == liar }); ban != nil || s.IsValid() {
		t.Fatalf("with the liar banned already: ban %v, suspect %v; want neither", ban, s)
	}
}

func TestBanListHoldsWithoutBanning(t *testing.T) {
	l := newBanList()
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }
	l.hold(honest, 5*time.Second)
	if !l.blocked(honest) || l.banned(honest) || l.numBans() != 0 || l.NumRanges() != 1 {
		t.Fatal("a held peer must be blocked, not banned")
	}
	if _, ok := l.Lookup(honest.AsSlice()); !ok {
		t.Fatal("held peer not blocked by the library's blocklist")
	}
	if !l.ban(honest, time.Minute) {
		t.Fatal("banning a held peer is a new ban")
	}
	now = now.Add(6 * time.Second)
	if !l.blocked(honest) || l.numBans() != 1 {
		t.Fatal("the ban must outlast the hold")
	}
	l.hold(other, time.Second)
	now = now.Add(2 * time.Second)
	if l.blocked(other) {
		t.Fatal("hold outlived its time")
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
				b.hashFailed(piece, nil)
			}
			b.verified(piece, func(p []byte, off int64) error { copy(p, data); return nil })
		})
	}
	wg.Wait()
	if len(b.pieces) != 0 {
		t.Fatalf("records left: %d pieces", len(b.pieces))
	}
}
