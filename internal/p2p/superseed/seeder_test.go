package superseed

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
)

// sampleBlob is the test blob of internal/p2p's tests.
func sampleBlob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>9)
	}
	return b
}

func newTestSeeder(t *testing.T, size int) (*Seeder, *p2p.MetaInfo, []byte) {
	t.Helper()
	return newLiveTestSeeder(t, size, nil)
}

// newLiveTestSeeder seeds a sample blob of size bytes whose pieces are
// there as far as hashes says (nil: all of them).
func newLiveTestSeeder(t *testing.T, size int, hashes *p2p.PieceHashes) (*Seeder, *p2p.MetaInfo, []byte) {
	t.Helper()
	return newLiveTestSeederWith(t, size, hashes, p2p.Config{})
}

// newLiveTestSeederWith is newLiveTestSeeder with cfg's settings.
func newLiveTestSeederWith(t *testing.T, size int, hashes *p2p.PieceHashes, cfg p2p.Config) (*Seeder, *p2p.MetaInfo, []byte) {
	t.Helper()
	data := sampleBlob(size)
	d := digest.FromBytes(data)
	raw, err := p2p.BuildMetaInfo(d, int64(size), p2p.MinPieceLength)
	if err != nil {
		t.Fatal(err)
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listen = "127.0.0.1:0"
	cfg.ApplyDefaults("127.0.0.1:0", nil)
	s, err := NewSeeder(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Seed(mi, bytes.NewReader(data), hashes, nil); err != nil {
		t.Fatal(err)
	}
	return s, mi, data
}

// peer is a raw wire-protocol client: it sees exactly what the seeder sends.
type peer struct {
	c   net.Conn
	dec pp.Decoder
}

func dial(t *testing.T, s *Seeder, ih metainfo.Hash) *peer {
	t.Helper()
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var id [20]byte
	copy(id[:], "-SA0001-testpeer0000")
	if _, err := pp.Handshake(ctx, c, &ih, id, pp.PeerExtensionBits{}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return &peer{c: c, dec: pp.Decoder{R: bufio.NewReader(c), MaxLength: 1 << 20,
		Pool: &sync.Pool{New: func() any { b := make([]byte, 1<<17); return &b }}}}
}

func (p *peer) read(t *testing.T) pp.Message {
	t.Helper()
	return p.readWithin(t, 5*time.Second)
}

func (p *peer) readWithin(t *testing.T, d time.Duration) pp.Message {
	t.Helper()
	_ = p.c.SetReadDeadline(time.Now().Add(d))
	var m pp.Message
	if err := p.dec.Decode(&m); err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

func (p *peer) send(t *testing.T, m pp.Message) {
	t.Helper()
	if _, err := p.c.Write(m.MustMarshalBinary()); err != nil {
		t.Fatal(err)
	}
}

// Each peer is shown a few pieces, and peers connecting together are shown
// different ones: the origin hands every piece out once before any twice.
func TestSeederRevealsDistinctPieces(t *testing.T) {
	s, mi, data := newTestSeeder(t, 8*p2p.MinPieceLength)
	seen := map[int]int{}
	for range 4 {
		p := dial(t, s, mi.InfoHash)
		var haves []int
		for len(haves) < s.reveal {
			m := p.read(t)
			if m.Type == pp.Have {
				haves = append(haves, int(m.Index))
			}
		}
		for _, h := range haves {
			seen[h]++
		}
		// A revealed piece is served, and matches the blob.
		p.send(t, pp.Message{Type: pp.Request, Index: pp.Integer(haves[0]), Begin: 0, Length: 16 << 10})
		for {
			m := p.read(t)
			if m.Type != pp.Piece {
				continue
			}
			off := haves[0] * p2p.MinPieceLength
			if !bytes.Equal(m.Piece, data[off:off+16<<10]) {
				t.Fatal("served block differs from the blob")
			}
			break
		}
	}
	if len(seen) != 8 {
		t.Fatalf("4 peers x 2 reveals covered %d distinct pieces (%v), want all 8 once", len(seen), seen)
	}
	// The seeder counts a block once its write returned, which may be just
	// after the peer read it.
	for deadline := time.Now().Add(5 * time.Second); s.BytesSent() != 4*16<<10; {
		if time.Now().After(deadline) {
			t.Fatalf("BytesSent = %d, want %d", s.BytesSent(), 4*16<<10)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSeederDropsBadPeers(t *testing.T) {
	s, mi, _ := newTestSeeder(t, 4*p2p.MinPieceLength)
	// A request outside the blob ends the connection.
	p := dial(t, s, mi.InfoHash)
	p.send(t, pp.Message{Type: pp.Request, Index: 99, Begin: 0, Length: 16 << 10})
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, p.c); err != nil {
		t.Fatalf("connection not closed cleanly after a bad request: %v", err)
	}
	// A request for a piece it was never shown ends the connection too: a
	// client must not get round the super-seeding.
	p = dial(t, s, mi.InfoHash)
	shown := map[int]bool{}
	for len(shown) < s.reveal {
		if m := p.read(t); m.Type == pp.Have {
			shown[int(m.Index)] = true
		}
	}
	unshown := 0
	for shown[unshown] {
		unshown++
	}
	p.send(t, pp.Message{Type: pp.Request, Index: pp.Integer(unshown), Begin: 0, Length: 16 << 10})
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m pp.Message
	for {
		if err := p.dec.Decode(&m); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("a peer that asked for a piece it was never shown was not dropped")
			}
			break // closed
		}
		if m.Type == pp.Piece {
			t.Fatalf("the seeder served piece %d, which it never showed this peer", m.Index)
		}
	}
	// An unknown info-hash gets no handshake back.
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var other metainfo.Hash
	other[0] = 1
	if _, err := pp.Handshake(ctx, c, &other, [20]byte{}, pp.PeerExtensionBits{}); err == nil {
		t.Fatal("handshake for an unknown blob succeeded")
	}
}

func TestSeederDrop(t *testing.T) {
	s, mi, _ := newTestSeeder(t, 2*p2p.MinPieceLength)
	p := dial(t, s, mi.InfoHash)
	s.Drop(mi.InfoHash)
	if s.Seeding(mi.InfoHash) {
		t.Fatal("still seeding after Drop")
	}
	// Its peers are disconnected...
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, p.c); err != nil {
		t.Fatalf("peer not disconnected: %v", err)
	}
	// ...and new ones are refused.
	c, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pp.Handshake(ctx, c, &mi.InfoHash, [20]byte{}, pp.PeerExtensionBits{}); err == nil {
		t.Fatal("handshake for a dropped blob succeeded")
	}
}

// A seeder that is closing seeds nothing more: an origin stopping while a
// fetch ends would otherwise start the seed's goroutines while Close waits
// for them (a race -race caught on an origin's shutdown) and leave the
// seed, and its file, open after Close.
func TestSeedAfterCloseIsRefused(t *testing.T) {
	s, mi, data := newTestSeeder(t, 2*p2p.MinPieceLength)
	s.Drop(mi.InfoHash)
	s.Close()
	closed := false
	err := s.Seed(mi, bytes.NewReader(data), nil, func() { closed = true })
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Seed after Close: %v, want ErrClosed", err)
	}
	if s.Seeding(mi.InfoHash) {
		t.Fatal("seeding after Close")
	}
	if closed {
		t.Fatal("a refused seed's onClose ran: the caller closes what it opened")
	}
}

// pick hands every piece out once, lowest index first; a second copy goes
// only to a starving peer, and only after the first copy had its patience.
func TestSeederPick(t *testing.T) {
	const n = 4
	t0 := time.Unix(1000, 0)
	newState := func() (*seedTorrent, *seedConn) {
		st := &seedTorrent{s: &Seeder{reveal: 2}, mi: &p2p.MetaInfo{},
			assigned: make([]int32, n), holders: make([]int32, n), revealedAt: make([]time.Time, n),
			lostAt: make([]time.Time, n), conns: map[*seedConn]struct{}{}, avail: n}
		st.mi.Info.PieceLength = p2p.MinPieceLength
		sc := &seedConn{t: st, has: make([]bool, n), revealed: make([]bool, n)}
		st.conns[sc] = struct{}{}
		return st, sc
	}
	reveal := func(st *seedTorrent, i int, at time.Time) {
		st.assigned[i]++
		st.revealedAt[i] = at
	}
	tests := []struct {
		name  string
		setup func(st *seedTorrent, sc *seedConn)
		now   time.Time
		want  int
		wait  bool
	}{
		{"fresh, lowest index", func(*seedTorrent, *seedConn) {}, t0, 0, false},
		{"skips handed out and held", func(st *seedTorrent, sc *seedConn) {
			reveal(st, 0, t0)
			st.holders[1] = 1
		}, t0, 2, false},
		{"all out, a peer holds what it lacks", func(st *seedTorrent, sc *seedConn) {
			for i := range n {
				reveal(st, i, t0)
			}
			st.holders[3] = 1
		}, t0.Add(time.Hour), -1, false},
		{"live: only pieces hashed so far", func(st *seedTorrent, sc *seedConn) {
			st.avail = 3
			reveal(st, 0, t0)
			reveal(st, 1, t0)
		}, t0, 2, false},
		{"live: nothing new yet", func(st *seedTorrent, sc *seedConn) {
			st.avail = 2
			reveal(st, 0, t0)
			reveal(st, 1, t0)
		}, t0, -1, true},
		{"starving, copies still on their way", func(st *seedTorrent, sc *seedConn) {
			for i := range n {
				reveal(st, i, t0)
			}
		}, t0.Add(time.Second / 2), -1, true},
		{"lost with its holder: the Haves of a copy may still come", func(st *seedTorrent, sc *seedConn) {
			for i := range n {
				reveal(st, i, t0)
			}
			st.lostAt[1] = t0
			st.holders[2] = 1
		}, t0.Add(time.Second), -1, true},
		{"lost with its holder: handed out as new after lostAfter", func(st *seedTorrent, sc *seedConn) {
			for i := range n {
				reveal(st, i, t0)
			}
			st.lostAt[1] = t0
			st.holders[2] = 1
		}, t0.Add(6 * time.Second), 1, false},
		{"lost, then a copy turned up", func(st *seedTorrent, sc *seedConn) {
			for i := range n {
				reveal(st, i, t0)
			}
			st.lostAt[1] = t0
			st.holders[1] = 1
		}, t0.Add(6 * time.Second), -1, false},
		{"starving, patience over", func(st *seedTorrent, sc *seedConn) {
			for i := range n {
				reveal(st, i, t0)
			}
			reveal(st, 0, t0)
			sc.has[1] = true
		}, t0.Add(2 * time.Second), 2, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, sc := newState()
			tc.setup(st, sc)
			got, wait := st.pick(sc, tc.now)
			if got != tc.want || (wait > 0) != tc.wait {
				t.Fatalf("pick = %d, wait %v; want %d, wait %v", got, wait, tc.want, tc.wait)
			}
		})
	}
}

// Blocks waiting for the upload cap take turns in the order their pieces
// were revealed; a waiter whose context ends leaves the queue.
func TestSeederUploadTurnsGoInRevealOrder(t *testing.T) {
	st := &seedTorrent{}
	ctx := context.Background()
	if err := st.acquire(ctx, 100); err != nil {
		t.Fatal(err)
	}
	waiting := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; {
			k := st.turn.Waiting()
			if k == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d waiters, want %d", k, n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	gone := make(chan error)
	go func() { gone <- st.acquire(cctx, 1) }()
	waiting(1)
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("a cancelled waiter got the turn")
	}
	waiting(0)

	got := make(chan uint64, 3)
	for _, seq := range []uint64{5, 2, 9} {
		go func() {
			if st.acquire(ctx, seq) == nil {
				got <- seq
			}
		}()
	}
	waiting(3)
	for _, want := range []uint64{2, 5, 9} {
		st.release()
		if s := <-got; s != want {
			t.Fatalf("turn went to %d, want %d", s, want)
		}
	}
	st.release()
	select {
	case <-st.turn.Take(func() uint64 { return 0 }).Ready():
	default:
		t.Fatal("turn still taken after the last release")
	}
}

// A blob still arriving is seeded piece by piece: a peer is shown a piece
// only once the origin has hashed it, and at once when it has.
func TestSeederRevealsPiecesAsTheyArrive(t *testing.T) {
	hashes := p2p.NewPieceHashes(3*p2p.MinPieceLength, p2p.MinPieceLength)
	s, mi, data := newLiveTestSeeder(t, 3*p2p.MinPieceLength, hashes)
	p := dial(t, s, mi.InfoHash)
	if m := p.read(t); m.Type != pp.Unchoke {
		t.Fatalf("first message %v, want unchoke", m.Type)
	}
	// Half of piece 0 hashed: nothing to show.
	hashes.Write(data[:p2p.MinPieceLength/2])
	_ = p.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var m pp.Message
	if err := p.dec.Decode(&m); err == nil {
		t.Fatalf("got %v before any piece was whole", m.Type)
	}
	hashes.Write(data[p2p.MinPieceLength/2 : 2*p2p.MinPieceLength])
	var haves []int
	for len(haves) < 2 {
		if m := p.read(t); m.Type == pp.Have {
			haves = append(haves, int(m.Index))
		}
	}
	if haves[0] != 0 || haves[1] != 1 {
		t.Fatalf("revealed %v, want pieces 0 and 1 as they were hashed", haves)
	}
	p.send(t, pp.Message{Type: pp.Request, Index: 1, Begin: 0, Length: 16 << 10})
	for {
		m := p.read(t)
		if m.Type == pp.Piece {
			if !bytes.Equal(m.Piece, data[p2p.MinPieceLength:p2p.MinPieceLength+16<<10]) {
				t.Fatal("served block differs from the blob")
			}
			break
		}
	}
	// A request for a piece not yet shown gets the peer dropped.
	p.send(t, pp.Message{Type: pp.Request, Index: 2, Begin: 0, Length: 16 << 10})
	_ = p.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if err := p.dec.Decode(&m); err != nil {
			break // dropped, as wanted
		}
		if m.Type == pp.Piece && m.Index == 2 {
			t.Fatal("served piece 2 before it was hashed")
		}
	}
}

// haves reads p's Haves for d.
func (p *peer) haves(t *testing.T, d time.Duration) []int {
	t.Helper()
	return p.readHaves(t, nil, time.Now().Add(d), 0)
}

// waitHaves reads p's Haves until n came (failing after 10 s), then for
// quiet more: what a slow machine delays is waited for, and what should
// not come has its time to.
func (p *peer) waitHaves(t *testing.T, n int, quiet time.Duration) []int {
	t.Helper()
	got := p.readHaves(t, nil, time.Now().Add(10*time.Second), n)
	if len(got) < n {
		t.Fatalf("%d Haves in 10 s (%v), want %d", len(got), got, n)
	}
	return p.readHaves(t, got, time.Now().Add(quiet), 0)
}

// readHaves appends p's Haves to got until the deadline or, with n > 0,
// until got holds n.
func (p *peer) readHaves(t *testing.T, got []int, deadline time.Time, n int) []int {
	t.Helper()
	_ = p.c.SetReadDeadline(deadline)
	for n <= 0 || len(got) < n {
		var m pp.Message
		if err := p.dec.Decode(&m); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return got
			}
			t.Fatalf("read: %v", err)
		}
		if m.Type == pp.Have {
			got = append(got, int(m.Index))
		}
	}
	return got
}

// While the blob arrives, a new piece goes to a peer fetching nothing from
// the origin, not to one already fetching a piece (reveal allows two): a
// slow peer's second piece would wait there for its first, held by nobody.
// With no such peer, a peer fetching one gets it.
func TestSeederRevealsNewPiecesToIdlePeersFirst(t *testing.T) {
	const n = 6
	hashes := p2p.NewPieceHashes(n*p2p.MinPieceLength, p2p.MinPieceLength)
	// A slow upload: a starving peer's second copy waits out a long
	// patience (8 s and more), so the only reveals here are of new pieces.
	s, mi, data := newLiveTestSeederWith(t, n*p2p.MinPieceLength, hashes, p2p.Config{UploadRate: 4 << 10})
	if s.reveal < 2 {
		t.Fatalf("reveal = %d: this test needs two", s.reveal)
	}
	piece := func(i int) []byte { return data[i*p2p.MinPieceLength : (i+1)*p2p.MinPieceLength] }
	// Three peers, each shown the piece that arrived after it connected.
	var busy []*peer
	for i := range 3 {
		p := dial(t, s, mi.InfoHash)
		if m := p.read(t); m.Type != pp.Unchoke {
			t.Fatalf("first message %v, want unchoke", m.Type)
		}
		hashes.Write(piece(i))
		if got := p.waitHaves(t, 1, 100*time.Millisecond); !slices.Equal(got, []int{i}) {
			t.Fatalf("peer %d was shown %v, want [%d]", i, got, i)
		}
		busy = append(busy, p)
	}
	idle := dial(t, s, mi.InfoHash)
	if m := idle.read(t); m.Type != pp.Unchoke {
		t.Fatalf("first message %v, want unchoke", m.Type)
	}
	hashes.Write(piece(3))
	if got := idle.waitHaves(t, 1, 100*time.Millisecond); !slices.Equal(got, []int{3}) {
		t.Fatalf("the idle peer was shown %v, want [3]", got)
	}
	for i, p := range busy {
		if got := p.haves(t, 50*time.Millisecond); len(got) > 0 {
			t.Fatalf("peer %d, already fetching a piece, was shown %v too", i, got)
		}
	}
	// Every peer fetches one now: the next piece is a second for one of them.
	hashes.Write(piece(4))
	shown := 0
	for deadline := time.Now().Add(10 * time.Second); shown == 0 && time.Now().Before(deadline); {
		for _, p := range append(busy, idle) {
			got := p.haves(t, 20*time.Millisecond)
			if slices.Equal(got, []int{4}) {
				shown++
			} else if len(got) > 0 {
				t.Fatalf("shown %v, want [4] or nothing", got)
			}
		}
	}
	for _, p := range append(busy, idle) {
		if got := p.haves(t, 50*time.Millisecond); len(got) > 0 {
			t.Fatalf("shown %v after piece 4 went to a peer", got)
		}
	}
	if shown != 1 {
		t.Fatalf("piece 4 was shown to %d peers, want 1", shown)
	}
}

// Once every piece is out, a starving peer is shown its second copies one
// at a time, the next when it holds the one before: the origin's upload
// at the end of a pull goes to every starving peer in turn, not two deep
// to the first.
func TestSeederShowsAStarvingPeerOneSecondCopyAtATime(t *testing.T) {
	s, mi, _ := newTestSeeder(t, 4*p2p.MinPieceLength)
	first := dial(t, s, mi.InfoHash)
	if got := first.waitHaves(t, 2, 100*time.Millisecond); !slices.Equal(got, []int{0, 1}) {
		t.Fatalf("the first peer was shown %v, want [0 1]", got)
	}
	second := dial(t, s, mi.InfoHash)
	if got := second.waitHaves(t, 2, 100*time.Millisecond); !slices.Equal(got, []int{2, 3}) {
		t.Fatalf("the second peer was shown %v, want [2 3]", got)
	}
	// Nobody holds a piece yet: the third starves, and after the first
	// copies' patience (1 s here) is shown one second copy.
	third := dial(t, s, mi.InfoHash)
	got := third.waitHaves(t, 1, 500*time.Millisecond)
	if len(got) != 1 {
		t.Fatalf("the starving peer was shown %v, want one second copy", got)
	}
	third.send(t, pp.Message{Type: pp.Have, Index: pp.Integer(got[0])})
	next := third.waitHaves(t, 1, 100*time.Millisecond)
	if len(next) != 1 || next[0] == got[0] {
		t.Fatalf("after holding piece %d the starving peer was shown %v, want one other piece", got[0], next)
	}
}

// A peer that leaves mid-pull with the only copy of a piece takes it with
// it: the piece is handed out again lostAfter later (the Haves of a copy it
// passed on would have come by then), to a peer that is not starving, not
// at the end when every peer starves for it.
func TestSeederHandsOutAPieceLostWithItsHolder(t *testing.T) {
	const n = 8
	s, mi, _ := newTestSeeder(t, n*p2p.MinPieceLength)
	bitfield := func(held ...int) pp.Message {
		b := make([]bool, n)
		for _, i := range held {
			b[i] = true
		}
		return pp.Message{Type: pp.Bitfield, Bitfield: b}
	}
	// reveals reads what the seeder shows p until it has want pieces.
	reveals := func(p *peer, want int) []int {
		var got []int
		for len(got) < want {
			if m := p.readWithin(t, 15*time.Second); m.Type == pp.Have {
				got = append(got, int(m.Index))
			}
		}
		return got
	}
	// c holds piece 7 (so that the others never starve) and sits on the
	// two pieces it is shown.
	c := dial(t, s, mi.InfoHash)
	c.send(t, bitfield(7))
	if got := reveals(c, 2); got[0] != 0 || got[1] != 1 {
		t.Fatalf("c shown %v, want [0 1]", got)
	}
	// The reveals went out before c's bitfield was read: wait for it, or
	// b may find piece 7 held by nobody and starve (a loaded machine, CI).
	s.mu.Lock()
	st := s.torrents[mi.InfoHash]
	s.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		st.mu.Lock()
		held := st.holders[7]
		st.mu.Unlock()
		if held == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c's bitfield not counted in 10 s")
		}
	}
	// a gets piece 2 and leaves before anyone else has it.
	a := dial(t, s, mi.InfoHash)
	if got := reveals(a, 2); got[0] != 2 || got[1] != 3 {
		t.Fatalf("a shown %v, want [2 3]", got)
	}
	a.send(t, pp.Message{Type: pp.Have, Index: 2})
	reveals(a, 1)
	a.c.Close()
	left := time.Now()
	// b takes every piece it is shown: 3-6 at once, 2 only once it is lost.
	b := dial(t, s, mi.InfoHash)
	var shown []int
	for !slices.Contains(shown, 2) {
		i := reveals(b, 1)[0]
		shown = append(shown, i)
		b.send(t, pp.Message{Type: pp.Have, Index: pp.Integer(i)})
	}
	waited := time.Since(left)
	slices.Sort(shown)
	if !slices.Equal(shown, []int{2, 3, 4, 5, 6}) {
		t.Fatalf("b shown %v, want 2-6", shown)
	}
	if waited < 5*time.Second-100*time.Millisecond {
		t.Fatalf("lost piece handed out again %v after its holder left, want lostAfter (5 s)", waited)
	}
	if got := s.PiecesLost(); got != 1 {
		t.Fatalf("PiecesLost = %d, want 1", got)
	}
}
