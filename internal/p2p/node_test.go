package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/testutil"
)

// newTestNode starts a node on 127.0.0.1 with cfg (defaults applied),
// closed when the test ends.
func newTestNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	if cfg.Engine == "" {
		cfg.Engine = testEngine()
	}
	cfg.ApplyDefaults("127.0.0.1:0", nil)
	n, err := NewNode(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// testEngine runs the package's node tests on either engine of live swarms
// (make test runs them on both): SHOAL_TEST_P2P_ENGINE=library, or the
// default. Read while the tests run, not at package init, so that go
// test's result cache keys on it.
func testEngine() string { return os.Getenv("SHOAL_TEST_P2P_ENGINE") }

// testBlobMeta returns a sample blob of size bytes and its metainfo.
func testBlobMeta(t *testing.T, size, pieceLen int64) ([]byte, *MetaInfo) {
	t.Helper()
	blob := sampleBlob(int(size))
	d := digest.FromBytes(blob)
	raw, err := BuildMetaInfo(d, size, pieceLen)
	if err != nil {
		t.Fatal(err)
	}
	mi, err := ParseMetaInfo(raw, d)
	if err != nil {
		t.Fatal(err)
	}
	return blob, mi
}

// downloadFrom has n download blob (described by mi) into a fresh store,
// told of seeder directly (no tracker). The caller holds a reference to dl.
func downloadFrom(t *testing.T, n, seeder *Node, blob []byte, mi *MetaInfo) (*Swarm, *store.Download) {
	t.Helper()
	sw, dl := startDownload(t, n, blob, mi)
	a := seeder.Addr()
	sw.m.addPeers([]netip.AddrPort{a}, nil)
	return sw, dl
}

// startDownload has n start downloading blob into a fresh store, knowing
// no peer yet.
func startDownload(t *testing.T, n *Node, blob []byte, mi *MetaInfo) (*Swarm, *store.Download) {
	t.Helper()
	st, err := store.Open(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	dl, err := st.Create(mi.Digest, mi.Info.Length)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dl.Release)
	// The hashes an agent checks: the blob's sha256 chain on the engine,
	// SHA-1s on the library.
	kind := HashChain
	if n.cfg.Engine == EngineLibrary {
		kind = HashSHA1
	}
	lists, err := HashListsOf(bytes.NewReader(blob), mi.Info.Length, mi.Info.PieceLength, kind)
	if err != nil {
		t.Fatal(err)
	}
	dl.Acquire()
	sw, err := n.Download(mi, dl, lists[0])
	if err != nil {
		t.Fatal(err)
	}
	return sw, dl
}

// slowFile reads a file slowly, counting reads in flight, so that a test
// can leave a swarm while a peer's read is running.
type slowFile struct {
	f        *os.File
	delay    time.Duration
	inFlight atomic.Int32
	failed   atomic.Int32
}

func (s *slowFile) ReadAt(b []byte, off int64) (int, error) {
	s.inFlight.Add(1)
	defer s.inFlight.Add(-1)
	time.Sleep(s.delay)
	n, err := s.f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		s.failed.Add(1)
	}
	return n, err
}

// Leaving a swarm while a peer's read is running must neither fail that
// read nor close the file under it: the library (v1.61.0) panics when a
// read fails on a dropped torrent. CI saw that panic when a test stopped
// an agent in the middle of a transfer.
func TestLeaveSwarmWhilePeerReads(t *testing.T) {
	old := readerLinger
	readerLinger = 500 * time.Millisecond
	t.Cleanup(func() { readerLinger = old })

	const size = 4 << 20
	blob, mi := testBlobMeta(t, size, 256<<10)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, blob, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	slow := &slowFile{f: f, delay: 50 * time.Millisecond}
	var closed atomic.Bool
	seeder, downloader := newTestNode(t, Config{}), newTestNode(t, Config{})
	sw, err := seeder.Seed(mi, slow, func() { closed.Store(true); f.Close() })
	if err != nil {
		t.Fatal(err)
	}
	dsw, _ := downloadFrom(t, downloader, seeder, blob, mi)

	deadline := time.Now().Add(10 * time.Second)
	for slow.inFlight.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the downloader never asked the seeder for a piece")
		}
		time.Sleep(time.Millisecond)
	}
	sw.Close()
	if closed.Load() {
		t.Fatal("the seed's file was closed while a peer's read was running")
	}
	// The read in flight ends, on a dropped torrent: it must succeed.
	time.Sleep(3 * slow.delay)
	if n := slow.failed.Load(); n > 0 {
		t.Fatalf("%d reads failed after leaving the swarm", n)
	}
	for !closed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the seed's file was never closed after leaving the swarm")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := sw.st.ReadAt(make([]byte, 1), 0); !errors.Is(err, errStorageGone) {
		t.Fatalf("read after the reader closed: %v, want errStorageGone", err)
	}
	if dsw.BytesCompleted() >= size {
		t.Fatal("the downloader completed: the test did not leave while it was reading")
	}
}

// cappedSeeder is a node seeding blob (described by mi) with its upload
// capped at rate bytes/s.
func cappedSeeder(t *testing.T, rate config.Rate, blob []byte, mi *MetaInfo) *Node {
	t.Helper()
	seeder := newTestNode(t, Config{UploadRate: rate})
	if _, err := seeder.Seed(mi, bytes.NewReader(blob), nil); err != nil {
		t.Fatal(err)
	}
	return seeder
}

// Nodes capped at a low rate (a burst of 64 KiB, below the library's 1 MiB
// default) still serve and take whole blocks: the library refuses a
// request longer than the upload limiter's burst, and the engine's 128 KiB
// blocks wait for the tokens in parts.
func TestLowRateNodeServesWholeBlocks(t *testing.T) {
	const size = 512 << 10
	blob, mi := testBlobMeta(t, size, 128<<10)
	seeder := cappedSeeder(t, 400_000, blob, mi)
	sw, dl := downloadFrom(t, newTestNode(t, Config{DownloadRate: 400_000}), seeder, blob, mi)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := dl.Wait(ctx); err != nil {
		t.Fatalf("download at 400 KB/s: %v (%d of %d bytes)", err, sw.BytesCompleted(), size)
	}
	if got := seeder.BytesSent(); got < size {
		t.Fatalf("seeder sent %d bytes, want at least %d", got, size)
	}
}

// conns_per_torrent caps a node's connections for one blob, and a swarm
// whose seeder takes two peers at a time still completes through the
// peers that got in.
func TestConnsPerTorrentCapsConnections(t *testing.T) {
	const size, leechers, maxConns = 2 << 20, 4, 2
	blob, mi := testBlobMeta(t, size, 128<<10)
	seeder := newTestNode(t, Config{UploadRate: 4_000_000, ConnsPerTorrent: maxConns})
	ssw, err := seeder.Seed(mi, bytes.NewReader(blob), nil)
	if err != nil {
		t.Fatal(err)
	}
	var nodes []*Node
	var dls []*store.Download
	var swarms []*Swarm
	for range leechers {
		n := newTestNode(t, Config{})
		sw, dl := downloadFrom(t, n, seeder, blob, mi)
		nodes, dls, swarms = append(nodes, n), append(dls, dl), append(swarms, sw)
	}
	for i, sw := range swarms {
		for j, n := range nodes {
			if i != j {
				a := n.Addr()
				sw.m.addPeers([]netip.AddrPort{a}, nil)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, leechers)
	for _, dl := range dls {
		go func() { done <- dl.Wait(ctx) }()
	}
	most := 0
	for finished := 0; finished < leechers; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("download: %v", err)
			}
			finished++
		case <-time.After(5 * time.Millisecond):
		}
		most = max(most, ssw.m.numConns())
	}
	if most > maxConns {
		t.Fatalf("the seeder had %d connections for the blob at once, conns_per_torrent is %d", most, maxConns)
	}
	if most == 0 {
		t.Fatal("the seeder was never seen connected")
	}
	if got := seeder.BytesSent(); got < size || got > leechers*size {
		t.Fatalf("seeder sent %d bytes for %d leechers of a %d-byte blob", got, leechers, size)
	}
}

// A client waiting for bytes far ahead of the in-order prefix raises those
// pieces' priority: they arrive first, and are served as soon as they are
// checked, long before the prefix reaches them.
func TestReaderFarAheadGetsItsPiecesFirst(t *testing.T) {
	const size, pl = 4 << 20, 256 << 10
	blob, mi := testBlobMeta(t, size, pl)
	seeder := cappedSeeder(t, 1_000_000, blob, mi) // the whole blob takes about 4 s
	sw, dl := downloadFrom(t, newTestNode(t, Config{}), seeder, blob, mi)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := dl.NewReader(ctx)
	defer r.Close()
	const off = 12 * pl
	got := make([]byte, pl)
	if _, err := r.ReadAt(got, off); err != nil {
		t.Fatal(err)
	}
	done := sw.BytesCompleted()
	if !bytes.Equal(got, blob[off:off+pl]) {
		t.Fatal("wrong bytes")
	}
	t.Logf("piece 12 of 16 read with %d of %d bytes in", done, size)
	if done > size/2 {
		t.Fatalf("piece 12 of 16 came with %d of %d bytes in: its priority was not raised", done, size)
	}
	if err := dl.Wait(ctx); err != nil {
		t.Fatalf("the rest: %v", err)
	}
}

// A node that is closing joins no swarm (a pull ending as the agent shuts
// down may still ask it to seed).
func TestClosedNodeJoinsNoSwarm(t *testing.T) {
	blob, mi := testBlobMeta(t, 256<<10, 64<<10)
	n := newTestNode(t, Config{})
	n.Close()
	if _, err := n.Seed(mi, bytes.NewReader(blob), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Seed after Close: %v, want ErrClosed", err)
	}
	if n.Swarm(mi.Digest.String()) != nil {
		t.Fatal("a closed node lists a swarm")
	}
}

// p2p.engine takes "shoal" (the default) or "library"; anything else is an
// error naming the key.
func TestEngineKey(t *testing.T) {
	var c Config
	c.ApplyDefaults("127.0.0.1:0", nil)
	if c.Engine != EngineShoal {
		t.Fatalf("default engine %q, want %q", c.Engine, EngineShoal)
	}
	c.Engine = "libtorrent"
	err := c.Validate("p2p")
	if err == nil || !strings.Contains(err.Error(), "p2p.engine") {
		t.Fatalf("engine %q: error %v, want one naming p2p.engine", c.Engine, err)
	}
	c.Engine = EngineLibrary
	if err := c.Validate("p2p"); err != nil {
		t.Fatalf("engine %q: %v", c.Engine, err)
	}
}

// On the engine, connections to origins are outside conns_per_torrent: a
// transfer full of agents still dials the origin the tracker lists (known
// by its peer ID). An origin's super-seeder hands each agent pieces nobody
// else has yet; an agent that lost its place at the origin to other agents
// had nothing new to trade (8 agents at 25 MB/s took up to 1.46x T_min).
func TestEngineDialsOriginsWhenFull(t *testing.T) {
	blob, mi := testBlobMeta(t, 1<<20, 128<<10)
	// Slow seeds: the download lasts while the test looks.
	agentSeed := cappedSeederOn(t, EngineShoal, 100_000, blob, mi, agentPeerIDPrefix)
	origin := cappedSeederOn(t, EngineShoal, 100_000, blob, mi, OriginPeerIDPrefix)
	leech := newTestNode(t, Config{Engine: EngineShoal, ConnsPerTorrent: 1})
	sw, dl := startDownload(t, leech, blob, mi)
	sw.m.addPeers([]netip.AddrPort{agentSeed.Addr()}, [][20]byte{agentSeed.peerID})
	testutil.Eventually(t, 5*time.Second, func() bool { return sw.m.numConns() == 1 }, "the agent seed never connected")
	sw.m.addPeers([]netip.AddrPort{origin.Addr()}, [][20]byte{origin.peerID})
	testutil.Eventually(t, 5*time.Second, func() bool { return sw.m.numConns() == 2 },
		"a transfer at conns_per_torrent = 1 did not dial the origin: %d connections", sw.m.numConns())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := dl.Wait(ctx); err != nil {
		t.Fatalf("download: %v", err)
	}
}

// Origins dial nobody: peers that dial an agent with an origin's peer ID
// are not origins, and get neither the slots outside conns_per_torrent
// kept for origins nor an origin's treatment. Four such dial a
// downloading transfer at conns_per_torrent = 1 (a dialler's slack: one
// more).
func TestPeersDiallingWithAnOriginsIDAreNoOrigins(t *testing.T) {
	blob, mi := testBlobMeta(t, 512<<10, 64<<10)
	leech := newTestNode(t, Config{Engine: EngineShoal, ConnsPerTorrent: 1})
	sw, _ := startDownload(t, leech, blob, mi)
	tr := sw.m.(*transfer)
	for k := range 4 {
		var id [20]byte
		copy(id[:], fmt.Sprintf("%s-impostor-%02d", OriginPeerIDPrefix, k))
		c, dec := dialRaw(t, leech, mi, id)
		// Taken (its Unchoke comes) or refused (closed): either way attach
		// has decided.
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			var m pp.Message
			if err := dec.Decode(&m); err != nil || m.Type == pp.Unchoke {
				break
			}
		}
	}
	tr.mu.Lock()
	conns, origins := len(tr.conns), tr.originConnsLocked()
	tr.mu.Unlock()
	if origins > 0 || conns > 2 {
		t.Fatalf("after four peers dialled with an origin's ID: %d connections, %d taken for origins; want at most 2, none", conns, origins)
	}
}

// cappedSeederOn is cappedSeeder on engine, with a peer ID of prefix.
func cappedSeederOn(t *testing.T, engine string, rate config.Rate, blob []byte, mi *MetaInfo, prefix string) *Node {
	t.Helper()
	n := newTestNode(t, Config{Engine: engine, UploadRate: rate})
	copy(n.peerID[:], prefix)
	if _, err := n.Seed(mi, bytes.NewReader(blob), nil); err != nil {
		t.Fatal(err)
	}
	return n
}

// On the engine, a downloading transfer takes a peer that dials it even
// when full, up to a third over conns_per_torrent (at least one): full
// peers dial nobody, so a dialler is short of connections, and refused by
// every full peer it would stay short.
func TestEngineTakesADiallerWhenFull(t *testing.T) {
	blob, mi := testBlobMeta(t, 512<<10, 64<<10)
	seed := cappedSeederOn(t, EngineShoal, 100_000, blob, mi, agentPeerIDPrefix)
	full := newTestNode(t, Config{Engine: EngineShoal, ConnsPerTorrent: 1})
	fsw, fdl := downloadFrom(t, full, seed, blob, mi)
	testutil.Eventually(t, 5*time.Second, func() bool { return fsw.m.numConns() == 1 }, "the seed never connected")
	short := newTestNode(t, Config{Engine: EngineShoal, ConnsPerTorrent: 1})
	ssw, sdl := startDownload(t, short, blob, mi)
	ssw.m.addPeers([]netip.AddrPort{full.Addr()}, [][20]byte{full.peerID})
	testutil.Eventually(t, 5*time.Second, func() bool { return fsw.m.numConns() == 2 && ssw.m.numConns() == 1 },
		"a full downloading transfer refused a peer that dialled it: %d and %d connections", fsw.m.numConns(), ssw.m.numConns())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, dl := range []*store.Download{fdl, sdl} {
		if err := dl.Wait(ctx); err != nil {
			t.Fatalf("download: %v", err)
		}
	}
}

// A cluster mid-upgrade runs both engines: an agent on either must fetch
// a live swarm's pieces from one on the other, each way round.
func TestEnginesTradeWithEachOther(t *testing.T) {
	// Capped at a low rate (64 KiB bursts) with 128 KiB pieces: the
	// library serves the shoal engine's 128 KiB blocks too.
	blob, mi := testBlobMeta(t, 1<<20, 128<<10)
	for _, c := range []struct{ seed, leech string }{
		{EngineLibrary, EngineShoal},
		{EngineShoal, EngineLibrary},
	} {
		t.Run(c.seed+"-to-"+c.leech, func(t *testing.T) {
			seed := cappedSeederOn(t, c.seed, 1_000_000, blob, mi, agentPeerIDPrefix)
			leech := newTestNode(t, Config{Engine: c.leech, DownloadRate: 1_000_000})
			sw, dl := downloadFrom(t, leech, seed, blob, mi)
			if err := waitOffering(sw, seed, dl, 30*time.Second); err != nil {
				t.Fatalf("%s agent from a %s seed: %v", c.leech, c.seed, err)
			}
		})
	}
}

// waitOffering waits for dl, offering seed to sw again every second as the
// tracker's answers would. The library forgets a peer whose dial or
// handshake failed (its openNewConns pops it from the torrent's peers), so
// one such failure on a loaded machine (CI, once: shoal-to-library under
// -race) left it with nobody to download from.
func waitOffering(sw *Swarm, seed *Node, dl *store.Download, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- dl.Wait(ctx) }()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-tick.C:
			sw.m.addPeers([]netip.AddrPort{seed.Addr()}, nil)
		}
	}
}

// On the engine, a full downloading transfer whose connections hold
// nothing it lacks (and lack nothing it holds) replaces one with a peer
// it knows of but could not dial while full: groups of agents holding the
// same pieces, connected only to each other, would otherwise wait for good.
func TestEngineReplacesAnIdleConnection(t *testing.T) {
	old := uselessAfter
	uselessAfter = time.Second
	t.Cleanup(func() { uselessAfter = old })
	blob, mi := testBlobMeta(t, 512<<10, 64<<10)
	seed := cappedSeederOn(t, EngineShoal, 0, blob, mi, agentPeerIDPrefix)
	empty := newTestNode(t, Config{Engine: EngineShoal})
	startDownload(t, empty, blob, mi) // holds nothing, knows nobody
	leech := newTestNode(t, Config{Engine: EngineShoal, ConnsPerTorrent: 1})
	sw, dl := startDownload(t, leech, blob, mi)
	sw.m.addPeers([]netip.AddrPort{empty.Addr()}, [][20]byte{empty.peerID})
	testutil.Eventually(t, 5*time.Second, func() bool { return sw.m.numConns() == 1 }, "the empty peer never connected")
	sw.m.addPeers([]netip.AddrPort{seed.Addr()}, [][20]byte{seed.peerID})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dl.Wait(ctx); err != nil {
		t.Fatalf("a full transfer kept a connection idle both ways instead of dialling the seed: %v", err)
	}
}

// On the engine, a piece of one block has one sender and no fingerprint in
// blame: when it fails its check, that sender is banned alone. A seeder of
// wrong bytes beside a good one (capped, so both are asked) is banned, its
// bad pieces are fetched again from the good one, and the blob commits.
func TestEngineBansTheSenderOfABadOneBlockPiece(t *testing.T) {
	if testEngine() == EngineLibrary {
		t.Skip("the engine's rule: the library fingerprints every block")
	}
	const size, pieceLen = 2 << 20, 128 << 10 // one block a piece
	blob, mi := testBlobMeta(t, size, pieceLen)
	bad := bytes.Clone(blob)
	for i := 0; i < size; i += pieceLen {
		bad[i+7] ^= 1
	}
	good := newTestNode(t, Config{UploadRate: 1 << 20})
	liar := newTestNode(t, Config{Listen: "127.0.0.7:0"})
	downloader := newTestNode(t, Config{})
	if _, err := good.Seed(mi, bytes.NewReader(blob), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := liar.Seed(mi, bytes.NewReader(bad), nil); err != nil {
		t.Fatal(err)
	}
	sw, dl := startDownload(t, downloader, blob, mi)
	sw.m.addPeers([]netip.AddrPort{good.Addr(), liar.Addr()}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := dl.Wait(ctx); err != nil {
		t.Fatalf("download beside a liar: %v", err)
	}
	if !downloader.Banned(liar.Addr().Addr()) {
		t.Fatal("the sender of bad one-block pieces is not banned")
	}
	if downloader.Banned(good.Addr().Addr()) {
		t.Fatal("the good seeder was banned too")
	}
	if downloader.BytesWasted() < pieceLen {
		t.Errorf("%d bytes wasted: the liar's pieces were never checked", downloader.BytesWasted())
	}
}

// A node outlives the library's webseed timer (5 s after NewClient) with
// nothing else calling into the client: under -race this failed before
// NewNode took the client's lock once after NewClient (the timer reads a
// field NewClient wrote without it).
func TestNodeOutlivesTheLibrarysWebseedTimer(t *testing.T) {
	n := newTestNode(t, Config{})
	time.Sleep(5500 * time.Millisecond)
	if !n.Addr().IsValid() {
		t.Fatal("the node has no address")
	}
}
