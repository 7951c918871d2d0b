package p2p

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/testutil"
)

// rawLeech is a downloader on the wire protocol, dialled into a node: it
// says it holds the pieces has reports, and fetch counts the blocks it gets.
type rawLeech struct {
	c   net.Conn
	w   *bufio.Writer
	dec *pp.Decoder
}

func dialRawLeech(t *testing.T, n *Node, mi *MetaInfo, name string, has func(int) bool) *rawLeech {
	t.Helper()
	return dialRawLeechUp(t, n, mi, name, has, 0)
}

// dialRawLeechUp is dialRawLeech for a peer that speaks the extension
// protocol and tells n its upload cap up (bytes per second) when up > 0.
func dialRawLeechUp(t *testing.T, n *Node, mi *MetaInfo, name string, has func(int) bool, up int64) *rawLeech {
	t.Helper()
	var id [20]byte
	copy(id[:], fmt.Sprintf("%s-%-12s", agentPeerIDPrefix, name))
	c, dec := dialRawExt(t, n, mi, id, up > 0)
	l := &rawLeech{c: c, w: bufio.NewWriter(c), dec: dec}
	bf := make([]bool, mi.Info.NumPieces())
	for i := range bf {
		bf[i] = has(i)
	}
	l.send(t, pp.Message{Type: pp.Bitfield, Bitfield: bf})
	if up > 0 {
		l.send(t, extHandshakeMessage(up))
	}
	l.send(t, pp.Message{Type: pp.Interested})
	for { // the seed's bitfield, then its unchoke
		var m pp.Message
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := l.dec.Decode(&m); err != nil {
			t.Fatalf("%s: waiting for the unchoke: %v", name, err)
		}
		if m.Type == pp.Unchoke {
			return l
		}
	}
}

// dialRaw dials n as peer id for mi's torrent and reads n's handshake
// back; the connection is closed when the test ends.
func dialRaw(t *testing.T, n *Node, mi *MetaInfo, id [20]byte) (net.Conn, *pp.Decoder) {
	t.Helper()
	return dialRawExt(t, n, mi, id, false)
}

// dialRawExt is dialRaw, the handshake saying whether the peer speaks the
// extension protocol.
func dialRawExt(t *testing.T, n *Node, mi *MetaInfo, id [20]byte, ext bool) (net.Conn, *pp.Decoder) {
	t.Helper()
	c, err := net.Dial("tcp", n.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := writeHandshake(c, mi.InfoHash, id, ext); err != nil {
		t.Fatal(err)
	}
	dec := &pp.Decoder{R: bufio.NewReader(c), MaxLength: 1 << 20}
	var hs [68]byte
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(dec.R, hs[:]); err != nil {
		t.Fatalf("handshake from %s: %v", n.Addr(), err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, dec
}

func (l *rawLeech) send(t *testing.T, msgs ...pp.Message) {
	t.Helper()
	for _, m := range msgs {
		if err := m.WriteTo(l.w); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.w.Flush(); err != nil {
		t.Fatal(err)
	}
}

// fetch keeps one request in flight (as a peer on a slow link does:
// requests_per_peer 1), asking for pieces from first on, and counts the
// blocks that came until stop is closed.
func (l *rawLeech) fetch(first, pieceLen int, stop <-chan struct{}, got *atomic.Int32) error {
	for i := first; ; i++ {
		m := pp.Message{Type: pp.Request, Index: pp.Integer(i), Begin: 0, Length: pp.Integer(pieceLen)}
		if err := m.WriteTo(l.w); err != nil {
			return err
		}
		if err := l.w.Flush(); err != nil {
			return err
		}
		for {
			var m pp.Message
			_ = l.c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if err := l.dec.Decode(&m); err != nil {
				return err
			}
			if m.Type == pp.Piece {
				break
			}
		}
		select {
		case <-stop:
			return nil
		default:
		}
		got.Add(1)
	}
}

// An agent's upload cap goes first to the blocks of the peer that holds
// the least: first come, an agent whose uploaders served more peers than
// average fell behind for good. Three peers holding half the blob and one
// holding nothing each keep a request in flight at a capped seed: first
// come, each would get a quarter of the blocks; the one behind is served
// whenever its request waits, about every other block (the turn is not
// handed to the connection whose block just went: its peer has not asked
// for the next one yet).
func TestUploadGoesFirstToThePeerFurthestBehind(t *testing.T) {
	seed, mi := turnSeed(t)
	var leeches []*rawLeech
	for k := range 3 {
		leeches = append(leeches, dialRawLeech(t, seed, mi, fmt.Sprintf("ahead%d", k), func(i int) bool { return i < 32 }))
	}
	leeches = append(leeches, dialRawLeech(t, seed, mi, "behind", func(int) bool { return false }))
	got, all := fetchTurns(t, leeches, turnPieceLen, 24)
	// First come: about all/4 (6 of 24); here about all/2.
	if b := got[3]; b*8 < all*3 {
		t.Fatalf("the peer holding nothing got %d of %d blocks, want at least 3/8 of them (first come gives it a quarter)", b, all)
	}
	t.Logf("the peer holding nothing got %d of %d blocks; the three holding half: %v", got[3], all, got[:3])
}

// Blocks for a peer that told us an upload cap under half ours wait for
// those of the other peers, whatever it holds: a piece multiplies at the
// rate its holder passes it on. The setting of the test above, the peer
// holding nothing now on a link at a quarter of the seed's (and saying
// so): served first as the peer behind, it got about half of the blocks;
// now it waits while any other peer's request does, and gets the rest once
// they stop.
func TestUploadGoesToSlowerPeersAfterTheRest(t *testing.T) {
	seed, mi := turnSeed(t)
	var leeches []*rawLeech
	for k := range 3 {
		leeches = append(leeches, dialRawLeechUp(t, seed, mi, fmt.Sprintf("ahead%d", k), func(i int) bool { return i < 32 }, turnUp))
	}
	leeches = append(leeches, dialRawLeechUp(t, seed, mi, "slow", func(int) bool { return false }, turnUp/4))
	got, all := fetchTurns(t, leeches, turnPieceLen, 24)
	// First come: about all/4 (6 of 24); as the peer behind, about all/2.
	if b := got[3]; b*8 >= all {
		t.Fatalf("the slower peer got %d of %d blocks while the others asked, want under 1/8 of them", b, all)
	}
	t.Logf("the slower peer got %d of %d blocks; the three at the seed's cap: %v", got[3], all, got[:3])
}

// A slower peer's first block goes by its fraction alone: its client waits
// on it (the first request is for the in-order prefix). Three peers at the
// seed's cap keep it busy; a peer at a quarter of it that then asks for
// piece 0 gets it within a few blocks, not once the others stop.
func TestSlowerPeersFirstBlockIsNotLast(t *testing.T) {
	seed, mi := turnSeed(t)
	got := make([]atomic.Int32, 3)
	stop := make(chan struct{})
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for k := range 3 {
		l := dialRawLeechUp(t, seed, mi, fmt.Sprintf("ahead%d", k), func(i int) bool { return i < 32 }, turnUp)
		wg.Go(func() { errs <- l.fetch(32+10*k, turnPieceLen, stop, &got[k]) })
	}
	sent := func() int32 { return got[0].Load() + got[1].Load() + got[2].Load() }
	testutil.Eventually(t, 30*time.Second, func() bool { return sent() >= 6 }, "the seed sent fewer than 6 blocks in 30 s")
	slow := dialRawLeechUp(t, seed, mi, "slow", func(int) bool { return false }, turnUp/4)
	before := sent()
	slow.send(t, pp.Message{Type: pp.Request, Index: 0, Begin: 0, Length: turnPieceLen})
	for {
		var m pp.Message
		_ = slow.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := slow.dec.Decode(&m); err != nil {
			t.Fatalf("the slower peer's first block: %v (the others got %d blocks meanwhile)", err, sent()-before)
		}
		if m.Type == pp.Piece {
			break
		}
	}
	if n := sent() - before; n > 4 {
		t.Errorf("the others got %d blocks before the slower peer's first, want at most 4", n)
	}
	select {
	case err := <-errs:
		t.Fatalf("fetching: %v", err)
	default:
	}
}

// turnSeed is the seed of the upload turns' tests (the engine's only): 64
// pieces of turnPieceLen, its upload capped at turnUp.
func turnSeed(t *testing.T) (*Node, *MetaInfo) {
	t.Helper()
	if testEngine() == EngineLibrary {
		t.Skip("the engine's upload turns (SHOAL_TEST_P2P_ENGINE=library runs the library)")
	}
	blob, mi := testBlobMeta(t, 64*turnPieceLen, turnPieceLen)
	return cappedSeederOn(t, EngineShoal, turnUp, blob, mi, agentPeerIDPrefix), mi
}

// The turn tests' pieces and their seed's upload cap: a block every
// ~160 ms.
const (
	turnPieceLen = 32 << 10
	turnUp       = 200_000
)

// fetchTurns has each leech keep a request in flight (the last from piece
// 0, the others from piece 32 on, 10 apart) until the seed has sent total
// blocks, and returns how many each had got by then, and their sum. The
// leeches then stop; a request still in flight is served first.
func fetchTurns(t *testing.T, leeches []*rawLeech, pieceLen, total int) ([]int32, int32) {
	t.Helper()
	got := make([]atomic.Int32, len(leeches))
	stop := make(chan struct{})
	errs := make(chan error, len(leeches))
	var wg sync.WaitGroup
	for k, l := range leeches {
		first := 32 + 10*k
		if k == len(leeches)-1 {
			first = 0
		}
		wg.Go(func() { errs <- l.fetch(first, pieceLen, stop, &got[k]) })
	}
	counts := func() ([]int32, int32) {
		n, all := make([]int32, len(got)), int32(0)
		for k := range got {
			n[k] = got[k].Load()
			all += n[k]
		}
		return n, all
	}
	testutil.Eventually(t, 30*time.Second, func() bool {
		_, all := counts()
		return all >= int32(total)
	}, "the seed sent fewer than %d blocks in 30 s", total)
	n, all := counts()
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("fetching: %v", err)
		}
	}
	return n, all
}

// An engine tells a peer that speaks the extension protocol its upload cap
// in the extension handshake, and says nothing of it to one that does not.
func TestEngineTellsItsUploadCap(t *testing.T) {
	if testEngine() == EngineLibrary {
		t.Skip("the engine's extension handshake (SHOAL_TEST_P2P_ENGINE=library runs the library)")
	}
	blob, mi := testBlobMeta(t, 4*MinPieceLength, MinPieceLength)
	seed := cappedSeederOn(t, EngineShoal, 300_000, blob, mi, agentPeerIDPrefix)
	for _, ext := range []bool{true, false} {
		var id [20]byte
		copy(id[:], fmt.Sprintf("%s-ext-%-8v", agentPeerIDPrefix, ext))
		c, dec := dialRawExt(t, seed, mi, id, ext)
		var told []extHandshake
		for { // the seed's bitfield, its extension handshake if any, its unchoke
			var m pp.Message
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := dec.Decode(&m); err != nil {
				t.Fatalf("ext %v: waiting for the unchoke: %v", ext, err)
			}
			if m.Type == pp.Extended {
				var h extHandshake
				if m.ExtendedID != pp.HandshakeExtendedID {
					t.Fatalf("ext %v: extension message %d, want only the handshake (0)", ext, m.ExtendedID)
				}
				var d map[string]any
				if err := bencode.Unmarshal(m.ExtendedPayload, &d); err != nil {
					t.Fatalf("ext %v: extension handshake %q: %v", ext, m.ExtendedPayload, err)
				}
				if _, ok := d["m"].(map[string]any); !ok {
					t.Fatalf("ext %v: extension handshake %q without its m dictionary (BEP 10)", ext, m.ExtendedPayload)
				}
				if err := bencode.Unmarshal(m.ExtendedPayload, &h); err != nil {
					t.Fatalf("ext %v: extension handshake %q: %v", ext, m.ExtendedPayload, err)
				}
				told = append(told, h)
			}
			if m.Type == pp.Unchoke {
				break
			}
		}
		switch {
		case ext && (len(told) != 1 || told[0].Up != 300_000):
			t.Errorf("a peer speaking the extension protocol was told %+v, want one handshake with m and shoal_up 300000", told)
		case !ext && len(told) != 0:
			t.Errorf("a peer not speaking the extension protocol was sent %+v", told)
		}
	}
}

// A block waiting for its turn at the upload cap is dropped when the peer
// cancels it (it asked another peer meanwhile: its stall rule), so that it
// does not arrive twice. With turns, a block for a peer ahead may wait
// long behind those for peers further behind.
func TestCancelledBlockWaitingForItsTurnIsNotSent(t *testing.T) {
	tr := &transfer{e: &engine{up: rate.NewLimiter(1e6, 64<<10)}, n: 16}
	c, dec, far := lazyPairOf(t, tr)
	tr.e.upTurn.Take(func() uint64 { return 0 }) // another block holds the turn
	rs := pp.RequestSpec{Index: 3, Begin: 0, Length: 16}
	c.wmu.Lock()
	c.serve = append(c.serve, rs)
	c.wmu.Unlock()
	c.signal()
	testutil.Eventually(t, 5*time.Second, func() bool { return tr.e.upTurn.Waiting() == 1 }, "the block never queued for the turn")
	if err := c.handle(pp.Message{Type: pp.Cancel, Index: rs.Index, Begin: rs.Begin, Length: rs.Length}, tr); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 5*time.Second, func() bool { return tr.e.upTurn.Waiting() == 0 }, "the cancelled block kept its place in the queue")
	tr.e.upTurn.Release()
	c.queue(pp.Message{Type: pp.Have, Index: 5})
	_ = far.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m pp.Message
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if m.Type != pp.Have || m.Index != 5 {
		t.Fatalf("first message after the cancel: %v, want the Have (the cancelled block went out)", m.Type)
	}
}

// A block larger than a limiter's burst waits for its tokens in parts
// instead of failing (rate.Limiter refuses n > burst), at the cap's pace,
// and a cancelled reservation gives them back.
func TestBlocksLargerThanTheBurstWaitInParts(t *testing.T) {
	l := NewLimiter(1_000_000)
	if l.Burst() >= blockSize {
		t.Fatalf("burst %d: the test wants one under a block (%d)", l.Burst(), blockSize)
	}
	start := time.Now()
	if err := WaitN(context.Background(), l, 2*blockSize); err != nil {
		t.Fatalf("WaitN of %d bytes: %v", 2*blockSize, err)
	}
	// The burst was free; the rest came at 1 MB/s.
	if least := time.Duration(float64(2*blockSize-l.Burst()) / 1e6 * float64(time.Second)); time.Since(start) < least*9/10 {
		t.Errorf("WaitN took %v, want at least %v", time.Since(start), least)
	}
	now := time.Now()
	d, cancel := reserveN(l, now, blockSize)
	if want := time.Duration(float64(blockSize) / 1e6 * float64(time.Second)); d < want*9/10 {
		t.Errorf("reserveN of a block on an empty bucket: wait %v, want about %v", d, want)
	}
	cancel()
	if d2, _ := reserveN(l, now, blockSize); d2 > d*11/10 {
		t.Errorf("after a cancel, the same reservation waits %v, want about %v", d2, d)
	}
}
