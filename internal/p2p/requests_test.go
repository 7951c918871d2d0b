package p2p

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/testutil"
)

func TestRequestsPerPeerFromDownloadRate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want int
	}{
		{Config{}, 0},                                                // uncapped: the engine's default, or the library's own
		{Config{DownloadRate: 500_000}, 1},                           // 10 KB in 20 ms: one block
		{Config{DownloadRate: 25_000_000}, 3},                        // 500 KB in the engine's 128 KiB blocks
		{Config{DownloadRate: 25_000_000, Engine: EngineLibrary}, 7}, // in the library's 64 KiB
		{Config{DownloadRate: 25_000_000, RequestsPerPeer: 3}, 3},    // set: as set
		{Config{RequestsPerPeer: 2}, 2},
	} {
		if got := tc.cfg.requestsPerPeer(); got != tc.want {
			t.Errorf("%+v: requestsPerPeer() = %d, want %d", tc.cfg, got, tc.want)
		}
	}
	bad := Config{RequestsPerPeer: -1}
	bad.ApplyDefaults("127.0.0.1:0", nil)
	if err := bad.Validate("p2p"); err == nil {
		t.Fatal("requests_per_peer -1 accepted")
	}
}

// rawPeer is a seed on the wire protocol that claims to accept 1000
// requests (reqq), answers each after a delay, and records the most
// requests it ever had from the node at once and the pieces asked for, in
// order. Options may make it hold only some pieces, choke the node for
// good, or wait before it tells what it has.
type rawPeer struct {
	ln   net.Listener
	blob []byte
	mi   *MetaInfo

	has        func(piece int) bool // nil: every piece
	choke      bool                 // never unchoke the node
	silent     bool                 // never send a block
	delay      time.Duration        // before each block (0: 20 ms)
	gate       <-chan struct{}      // closed: send the bitfield
	interested chan struct{}        // closed when the node says it is interested
	up         int64                // the upload cap told in its extension handshake (0: none)

	mu      sync.Mutex
	most    int
	asked   []int // pieces requested, in order
	lengths []int // the requests' lengths, in order
	// askedAtCancel is len(asked) when the node first cancelled a request
	// (-1: it has not).
	askedAtCancel int
	err           error
	closed        bool
	conns         int // connections accepted
}

func startRawPeer(t *testing.T, blob []byte, mi *MetaInfo, opts ...func(*rawPeer)) *rawPeer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{ln: ln, blob: blob, mi: mi, interested: make(chan struct{}), askedAtCancel: -1}
	for _, o := range opts {
		o(p)
	}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

// serve takes every connection the node makes: a node that lost one
// (to a loaded machine, say) dials again when told of the
// peer again (downloadFromAddr does, as a tracker would).
func (p *rawPeer) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns++
		p.mu.Unlock()
		go func() {
			defer c.Close()
			// The node closes the connection once it has the whole blob
			// (two seeds have nothing to trade), perhaps with a block of
			// ours unread: an end, not a fault of the peer.
			if err := p.session(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
		}()
	}
}

func (p *rawPeer) session(c net.Conn) error {
	var hs [68]byte
	if _, err := io.ReadFull(c, hs[:]); err != nil {
		return err
	}
	reserved := pp.NewPeerExtensionBytes(pp.ExtensionBitLtep)
	out := append([]byte(pp.Protocol), reserved[:]...)
	out = append(out, p.mi.InfoHash[:]...)
	// A peer ID of its own: the node drops a second connection from the same ID.
	out = append(out, fmt.Sprintf("-XX0001-rawpeer%05d", p.ln.Addr().(*net.TCPAddr).Port)...)
	var hello any = pp.ExtendedHandshakeMessage{M: map[pp.ExtensionName]pp.ExtensionNumber{}, Reqq: 1000}
	if p.up > 0 {
		hello = map[string]any{"m": map[string]any{}, "reqq": 1000, "shoal_up": p.up}
	}
	ext, err := bencode.Marshal(hello)
	if err != nil {
		return err
	}
	have := make([]bool, p.mi.Info.NumPieces())
	for i := range have {
		have[i] = p.has == nil || p.has(i)
	}
	w := bufio.NewWriter(c)
	var wmu sync.Mutex
	send := func(msgs ...pp.Message) error {
		wmu.Lock()
		defer wmu.Unlock()
		for _, m := range msgs {
			if err := m.WriteTo(w); err != nil {
				return err
			}
		}
		return w.Flush()
	}
	if _, err := w.Write(out); err != nil {
		return err
	}
	if err := send(pp.Message{Type: pp.Extended, ExtendedID: pp.HandshakeExtendedID, ExtendedPayload: ext}); err != nil {
		return err
	}
	if p.gate != nil {
		<-p.gate
	}
	first := []pp.Message{{Type: pp.Bitfield, Bitfield: have}}
	if !p.choke {
		first = append(first, pp.Message{Type: pp.Unchoke})
	}
	if err := send(first...); err != nil {
		return err
	}
	// Requests are answered one at a time, slowly, so that a node free to
	// queue more would.
	queue := make(chan pp.Message, 2000)
	var pending sync.Map // [index, begin, length] -> struct{}: requested, not answered or cancelled
	go func() {
		for m := range queue {
			if p.silent {
				continue
			}
			time.Sleep(cmp.Or(p.delay, 20*time.Millisecond))
			r := [3]pp.Integer{m.Index, m.Begin, m.Length}
			if _, ok := pending.LoadAndDelete(r); !ok {
				continue // cancelled
			}
			off := int64(m.Index)*p.mi.Info.PieceLength + int64(m.Begin)
			if send(pp.Message{Type: pp.Piece, Index: m.Index, Begin: m.Begin, Piece: p.blob[off : off+int64(m.Length)]}) != nil {
				return
			}
		}
	}()
	defer close(queue)
	d := pp.Decoder{R: bufio.NewReader(c), MaxLength: 1 << 20,
		Pool: &sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}}
	for {
		var m pp.Message
		if err := d.Decode(&m); err != nil {
			return err
		}
		r := [3]pp.Integer{m.Index, m.Begin, m.Length}
		switch m.Type {
		case pp.Request:
			pending.Store(r, struct{}{})
			n := 0
			pending.Range(func(any, any) bool { n++; return true })
			p.mu.Lock()
			p.most = max(p.most, n)
			p.asked = append(p.asked, int(m.Index))
			p.lengths = append(p.lengths, int(m.Length))
			p.mu.Unlock()
			queue <- m
		case pp.Cancel:
			pending.Delete(r)
			p.mu.Lock()
			if p.askedAtCancel < 0 {
				p.askedAtCancel = len(p.asked)
			}
			p.mu.Unlock()
		case pp.Interested:
			p.mu.Lock()
			if !p.closed {
				p.closed = true
				close(p.interested)
			}
			p.mu.Unlock()
		}
	}
}

func (p *rawPeer) result() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.most, p.err
}

// requests_per_peer caps the block requests a node has in flight to one
// peer, whatever the peer says it accepts; unset and uncapped, the library
// queues many, the engine defaultQueueDepth.
func TestRequestsPerPeerCapsRequestsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		atMost  int
		atLeast int
	}{
		{"requests_per_peer 1", Config{RequestsPerPeer: 1}, 1, 1},
		{"requests_per_peer 3", Config{RequestsPerPeer: 3}, 3, 3},
		{"from download_rate", Config{DownloadRate: 2_000_000}, 1, 1},
		{"default", Config{}, 1000, 4}, // the library: towards what the peer allows; the engine: defaultQueueDepth
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 2 << 20
			blob, mi := testBlobMeta(t, size, 64<<10)
			peer := startRawPeer(t, blob, mi)
			n := newTestNode(t, tc.cfg)
			sw, dl := downloadFromAddr(t, n, peer.ln.Addr().(*net.TCPAddr), blob, mi)
			waitDownload(t, sw, dl, 30*time.Second)
			most, err := peer.result()
			if err != nil {
				t.Fatalf("raw peer: %v", err)
			}
			if most > tc.atMost || most < tc.atLeast {
				t.Fatalf("the node had up to %d requests in flight to the peer, want %d..%d", most, tc.atLeast, tc.atMost)
			}
			peer.mu.Lock()
			conns := peer.conns
			peer.mu.Unlock()
			t.Logf("%s: at most %d requests in flight (%d connections)", tc.name, most, conns)
		})
	}
}

// The engine asks for blocks of 128 KiB (blockSize), half the requests and
// block messages of 64 KiB at pieces of 128 KiB and up, and a piece shorter
// than that in one request.
func TestEngineAsksForBlocksOf128KiB(t *testing.T) {
	const size, pieceLen = 1<<20 + 96<<10, 256 << 10 // the last piece 96 KiB
	blob, mi := testBlobMeta(t, size, pieceLen)
	peer := startRawPeer(t, blob, mi)
	n := newTestNode(t, Config{Engine: EngineShoal})
	sw, dl := downloadFromAddr(t, n, peer.ln.Addr().(*net.TCPAddr), blob, mi)
	waitDownload(t, sw, dl, 30*time.Second)
	if _, err := peer.result(); err != nil {
		t.Fatalf("raw peer: %v", err)
	}
	peer.mu.Lock()
	defer peer.mu.Unlock()
	var n128, n96 int
	for _, l := range peer.lengths {
		switch l {
		case 128 << 10:
			n128++
		case 96 << 10:
			n96++
		default:
			t.Errorf("a request for %d bytes", l)
		}
	}
	if n128 != 8 || n96 != 1 {
		t.Errorf("requests: %d of 128 KiB and %d of 96 KiB, want 8 and 1 (lengths %v)", n128, n96, peer.lengths)
	}
}

// waitDownload fails t unless dl completes within d.
func waitDownload(t *testing.T, sw *Swarm, dl *store.Download, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := dl.Wait(ctx); err != nil {
		t.Fatalf("download: %v (%d of %d bytes)", err, sw.BytesCompleted(), sw.mi.Info.Length)
	}
}

// downloadFromAddr is downloadFrom with the seed at a bare address, told
// again every second as a tracker's announces would: the library dials a
// peer once per telling, and a handshake lost on a loaded machine would
// otherwise leave the download with no peer (a no-op on the engine, which
// keeps the peer it was told of).
func downloadFromAddr(t *testing.T, n *Node, a *net.TCPAddr, blob []byte, mi *MetaInfo) (*Swarm, *store.Download) {
	t.Helper()
	sw, dl := startDownload(t, n, blob, mi)
	peers := []netip.AddrPort{a.AddrPort()}
	sw.m.addPeers(peers, nil)
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				sw.m.addPeers(peers, nil)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-stopped })
	return sw, dl
}

// The prefix's next piece is asked for first even when it is the most
// common piece, which rarest-first would leave for last: a client
// streaming the blob gets its first bytes at once. Here a peer that chokes
// the node also holds piece 0, so piece 0 is the only piece two peers hold.
func TestPrefixNextPieceIsAskedForFirst(t *testing.T) {
	const size, pieceLen = 2 << 20, 64 << 10
	blob, mi := testBlobMeta(t, size, pieceLen)
	common := startRawPeer(t, blob, mi, func(p *rawPeer) {
		p.has = func(i int) bool { return i == 0 }
		p.choke = true
	})
	// The seed tells what it has only once the node has heard the choking
	// peer (the node says it is interested then), so that the node sees
	// piece 0 held twice before it asks for anything.
	seed := startRawPeer(t, blob, mi, func(p *rawPeer) { p.gate = common.interested })
	n := newTestNode(t, Config{RequestsPerPeer: 1})
	sw, dl := downloadFromAddr(t, n, common.ln.Addr().(*net.TCPAddr), blob, mi)
	sw.m.addPeers([]netip.AddrPort{seed.ln.Addr().(*net.TCPAddr).AddrPort()}, nil)
	waitDownload(t, sw, dl, 30*time.Second)
	seed.mu.Lock()
	asked := slices.Clone(seed.asked)
	seed.mu.Unlock()
	if len(asked) == 0 {
		t.Fatal("the seed was asked for nothing")
	}
	if first := slices.Index(asked, 0); first != 0 {
		t.Fatalf("piece 0 was request %d of %d to the seed (order %v), want the first", first+1, len(asked), asked)
	}
	t.Logf("pieces asked for, in order: %v", asked)
}

// A peer that sits on the node's requests loses them to a peer that sends
// (the stall rule): the silent peer, alone at first, is asked for the
// in-order prefix's next piece (0), and the client's stream gets its first
// bytes long before the download ends. Without the rule piece 0 would come
// only in the end game, from the other peer's second request, with the
// rest of the blob already there.
func TestStalledRequestsGoToAPeerThatSends(t *testing.T) {
	if testEngine() == EngineLibrary {
		t.Skip("the stall rule is the engine's")
	}
	const size, pieceLen = 4 << 20, 64 << 10
	blob, mi := testBlobMeta(t, size, pieceLen)
	silent := startRawPeer(t, blob, mi, func(p *rawPeer) { p.silent = true })
	seed := startRawPeer(t, blob, mi)
	n := newTestNode(t, Config{DownloadRate: 512_000}) // 8 s for the blob; stall after 1.5 s
	sw, dl := downloadFromAddr(t, n, silent.ln.Addr().(*net.TCPAddr), blob, mi)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		silent.mu.Lock()
		asked := len(silent.asked)
		silent.mu.Unlock()
		if asked > 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the silent peer was asked for nothing")
		}
		time.Sleep(10 * time.Millisecond)
	}
	sw.m.addPeers([]netip.AddrPort{seed.ln.Addr().(*net.TCPAddr).AddrPort()}, nil)
	for dl.Hashed() == 0 {
		if ctx.Err() != nil {
			t.Fatalf("no first byte after 60 s (%d of %d bytes)", sw.BytesCompleted(), size)
		}
		time.Sleep(10 * time.Millisecond)
	}
	first := dl.Hashed()
	if err := dl.Wait(ctx); err != nil {
		t.Fatalf("download: %v (%d of %d bytes)", err, sw.BytesCompleted(), size)
	}
	if first >= size/2 {
		t.Errorf("the stream's first bytes came with %d of %d bytes in order: piece 0 waited on the silent peer", first, size)
	}
	silent.mu.Lock()
	defer silent.mu.Unlock()
	if slices.Index(silent.asked, 0) < 0 {
		t.Errorf("the silent peer was asked for %v, not piece 0", silent.asked)
	}
	if n.RequestsMoved() == 0 {
		t.Error("shoal_p2p_requests_moved_total counted no request taken back from the silent peer")
	}
}

// A peer that told an upload cap over twice ours serves us after its
// equals on purpose (uploadcap.go): requests that wait there past the stall
// time go to another holder, as from any peer, but the peer is not snubbed,
// and is asked again at once. A peer that told nothing is snubbed: nothing
// more is asked of it for snubTimeout (30 s, longer than this download)
// while the other peers fill the link (never underfed here: a download that
// starts from nothing averages under the cap for its first ticks).
func TestFasterPeerIsNotSnubbedForWaits(t *testing.T) {
	if testEngine() == EngineLibrary {
		t.Skip("the stall rule is the engine's")
	}
	old := underfedAfter
	underfedAfter = time.Hour
	t.Cleanup(func() { underfedAfter = old })
	for _, tc := range []struct {
		up     int64
		faster bool
	}{{1_000_000, true}, {0, false}} {
		// 8 s for the blob; stall after 1.5 s; our upload cap a quarter of
		// what the silent peer tells.
		at, all := askedOfSilent(t, 4<<20, Config{DownloadRate: 512_000, UploadRate: 250_000}, func(p *rawPeer) { p.up = tc.up })
		switch {
		case at < 0:
			t.Errorf("up %d: the requests waiting at the silent peer were never moved (%d asked)", tc.up, all)
		case tc.faster && all == at:
			t.Errorf("a peer telling an upload cap 4x ours was asked nothing after its requests were moved (%d asked before): snubbed", at)
		case !tc.faster && all > at:
			t.Errorf("a silent peer telling no cap was asked %d more after its requests were moved: not snubbed", all-at)
		}
		t.Logf("up %d: %d requests before the first move, %d in all", tc.up, at, all)
	}
}

// A snubbed peer is asked again while the transfer is underfed: the snub
// spares us a peer that sits on requests others can serve meanwhile, and
// an agent its other peers do not fill has nobody better to ask. At N =
// 128 the slowest agents had 4 or 5 of their 7 peers snubbed, most for
// having waited their turn at an uploader that serves the peers behind it
// first, and ran under their cap for 10 s.
func TestSnubbedPeerIsAskedAgainWhileUnderfed(t *testing.T) {
	if testEngine() == EngineLibrary {
		t.Skip("the stall rule is the engine's")
	}
	// A block of 64 KiB every 200 ms from the seed: 320 kB/s, under 0.9
	// of our cap; underfed from 1 s on, and 1 MiB in 3.3 s.
	shortUnderfedAfter(t)
	at, all := askedOfSilent(t, 1<<20, Config{DownloadRate: 512_000}, nil, func(p *rawPeer) { p.delay = 200 * time.Millisecond })
	switch {
	case at < 0:
		t.Fatalf("the requests waiting at the silent peer were never moved (%d asked)", all)
	case all == at:
		t.Fatalf("an underfed download asked its snubbed peer nothing after its requests were moved (%d asked before)", at)
	}
	t.Logf("%d requests before the first move, %d in all", at, all)
}

// askedOfSilent downloads a blob of size bytes on a node of cfg from a raw
// peer that never sends a block (set up further by silentOpt) and, once
// that peer was asked, from a seed (seedOpts) too. It returns how many
// requests the silent peer had got when the node first cancelled one (-1:
// never), and in all.
func askedOfSilent(t *testing.T, size int64, cfg Config, silentOpt func(*rawPeer), seedOpts ...func(*rawPeer)) (at, all int) {
	t.Helper()
	const pieceLen = 64 << 10
	blob, mi := testBlobMeta(t, size, pieceLen)
	silent := startRawPeer(t, blob, mi, func(p *rawPeer) {
		p.silent = true
		if silentOpt != nil {
			silentOpt(p)
		}
	})
	seed := startRawPeer(t, blob, mi, seedOpts...)
	n := newTestNode(t, cfg)
	sw, dl := downloadFromAddr(t, n, silent.ln.Addr().(*net.TCPAddr), blob, mi)
	testutil.Eventually(t, 10*time.Second, func() bool {
		silent.mu.Lock()
		defer silent.mu.Unlock()
		return len(silent.asked) > 0
	}, "the silent peer was asked for nothing")
	sw.m.addPeers([]netip.AddrPort{seed.ln.Addr().(*net.TCPAddr).AddrPort()}, nil)
	waitDownload(t, sw, dl, 60*time.Second)
	silent.mu.Lock()
	defer silent.mu.Unlock()
	return silent.askedAtCancel, len(silent.asked)
}

// The stall time: four of the peer's usual gaps between blocks, and at
// least eight times what a block takes at the download cap, 1.5 s to 3 min
// (a round of turns at a slow uploader may take longer than 30 s).
func TestStallAfterScalesWithTheDownloadCap(t *testing.T) {
	for _, tc := range []struct {
		down float64 // B/s; 0: uncapped
		gap  time.Duration
		size int64
		want time.Duration
	}{
		{0, 0, 32 << 10, minStall},
		{1e6, 0, 32 << 10, minStall},                 // 8 x 33 ms
		{64e3, 0, 32 << 10, 4096 * time.Millisecond}, // 8 x 512 ms
		{64e3, 2 * time.Second, 32 << 10, 8 * time.Second},
		{1e6, 500 * time.Millisecond, 128 << 10, 2 * time.Second},
		{6.4e3, 0, 32 << 10, 40960 * time.Millisecond}, // 8 x 5.12 s
		{6.4e3, 20 * time.Second, 32 << 10, 80 * time.Second},
		{4e3, 0, 128 << 10, 3 * time.Minute}, // 8 x 32.8 s
	} {
		e := &engine{}
		if tc.down > 0 {
			e.down = rate.NewLimiter(rate.Limit(tc.down), 64<<10)
		}
		c := &peerConn{t: &transfer{e: e}, blockGap: tc.gap}
		if got := c.stallAfter(tc.size); got != tc.want {
			t.Errorf("down %g B/s, gap %v, block %d: stallAfter %v, want %v", tc.down, tc.gap, tc.size, got, tc.want)
		}
	}
}

// A transfer whose download runs well under its cap asks the quicker half
// of its peers for two blocks at a time instead of one (queueDepth): one
// request in flight left a fast agent with slow peers short of its link.
// The slow peer keeps one.
func TestUnderfedTransferAsksQuickPeersForMore(t *testing.T) {
	const size, pieceLen = 16 << 20, 64 << 10
	blob, mi := testBlobMeta(t, size, pieceLen)
	// 64 KiB every 40 ms and every 400 ms: 1.8 MB/s of a 4 MB/s cap.
	shortUnderfedAfter(t)
	quick := startRawPeer(t, blob, mi, func(p *rawPeer) { p.delay = 40 * time.Millisecond })
	slow := startRawPeer(t, blob, mi, func(p *rawPeer) { p.delay = 400 * time.Millisecond })
	n := newTestNode(t, Config{Engine: EngineShoal, DownloadRate: 4_000_000})
	started := time.Now()
	sw, _ := startDownload(t, n, blob, mi)
	sw.m.addPeers([]netip.AddrPort{quick.ln.Addr().(*net.TCPAddr).AddrPort(), slow.ln.Addr().(*net.TCPAddr).AddrPort()}, nil)
	// Underfed at the first tick past underfedAfter; the blob lasts 9 s.
	deadline := time.Now().Add(underfedAfter + 2*time.Second)
	for time.Now().Before(deadline) {
		if most, _ := quick.result(); most >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.Close()
	t.Logf("the node ran %v", time.Since(started))
	q, err := quick.result()
	if err != nil {
		t.Fatalf("quick peer: %v", err)
	}
	s, err := slow.result()
	if err != nil {
		t.Fatalf("slow peer: %v", err)
	}
	if q != 2 || s != 1 {
		t.Fatalf("requests in flight at once: %d to the quick peer (want 2), %d to the slow one (want 1); %d of %d bytes in", q, s, sw.BytesCompleted(), size)
	}
}

// shortUnderfedAfter makes transfers underfed after 1 s: the tests that
// wait for it are short. (It was first chosen to close a test's node before
// anacrolix/torrent v1.61.0's webseed timer fired, 5 s after NewClient, a
// race -race reported; NewNode now orders that write:
// TestNodeOutlivesTheLibrarysWebseedTimer.)
func shortUnderfedAfter(t *testing.T) {
	old := underfedAfter
	underfedAfter = time.Second
	t.Cleanup(func() { underfedAfter = old })
}

// feedLocked marks a transfer underfed under 90 % of its download cap once
// underfedAfter has passed, and the faster half of its agent connections
// quick; queueDepth doubles requests_per_peer's default only for those.
func TestUnderfedQueueDepth(t *testing.T) {
	const rpp = 1 // 20 ms of 4 MB/s in 128 KiB blocks: at least one
	for _, tc := range []struct {
		name       string
		set        int           // requests_per_peer set by hand (0: from the cap)
		age        time.Duration // since the transfer began
		bytes      int64         // received in the last tick (and the one before)
		gaps       []time.Duration
		wantDepths []int // per connection, in gaps' order
	}{
		{"underfed: the faster half", 0, 10 * time.Second, 1_000_000, []time.Duration{40, 400, 50, 300}, []int{2, 1, 2, 1}},
		{"odd count: the median is quick", 0, 10 * time.Second, 1_000_000, []time.Duration{40, 400, 50}, []int{2, 1, 2}},
		{"one connection: none quick", 0, 10 * time.Second, 1_000_000, []time.Duration{40}, []int{1}},
		{"at 85 % of the cap: underfed", 0, 10 * time.Second, 3_400_000, []time.Duration{40, 400}, []int{2, 1}},
		{"fed", 0, 10 * time.Second, 3_700_000, []time.Duration{40, 400}, []int{1, 1}},
		{"too young", 0, 2 * time.Second, 1_000_000, []time.Duration{40, 400}, []int{1, 1}},
		{"requests_per_peer set", 1, 10 * time.Second, 1_000_000, []time.Duration{40, 400}, []int{1, 1}},
		{"no block yet: not quick", 0, 10 * time.Second, 1_000_000, []time.Duration{0, 400, 50}, []int{1, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now()
			e := &engine{down: rate.NewLimiter(4_000_000, 64<<10)}
			e.cfg.DownloadRate, e.cfg.RequestsPerPeer = 4_000_000, tc.set
			tr := &transfer{e: e, n: 10, since: now.Add(-tc.age), conns: map[*peerConn]struct{}{}}
			var cs []*peerConn
			for _, g := range tc.gaps {
				c := &peerConn{t: tr, blockGap: g * time.Millisecond, closed: true} // closed: fillLocked sends nothing
				cs = append(cs, c)
				tr.conns[c] = struct{}{}
			}
			// An origin, however quick, never gets the second request.
			origin := &peerConn{t: tr, origin: true, blockGap: time.Millisecond, closed: true}
			tr.conns[origin] = struct{}{}
			tr.downRate = float64(tc.bytes) // the tick before
			tr.down.Store(tc.bytes)
			tr.feedLocked(now)
			for i, c := range cs {
				if got := tr.queueDepth(c); got != tc.wantDepths[i]*max(rpp, tc.set) {
					t.Errorf("gap %v: queue depth %d, want %d (underfed %v)", c.blockGap, got, tc.wantDepths[i], tr.underfed)
				}
			}
			if got := tr.queueDepth(origin); got != max(rpp, tc.set) {
				t.Errorf("origin: queue depth %d, want %d", got, max(rpp, tc.set))
			}
		})
	}
}
