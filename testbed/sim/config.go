// Package sim is a discrete-event model of a Shoal swarm: one blob, one
// origin super-seeding it (internal/p2p/superseed's reveal and hand-out
// rules), N agents trading pieces as anacrolix/torrent does (per-connection
// request slots, rarest-first or in-order piece choice, a cap on connections
// per torrent), the tracker's peer sampling and announce interval, token
// bucket rates per node, request latency, uneven links, late joiners and
// churn. It predicts what `shoal bench swarm` would measure past the agents
// one machine can run (see docs/benchmarks.md, "Simulator").
//
// The model works at block granularity, with fluid rates between events:
// a transfer is one block (64 KiB, p2p's chunkSize, or the whole piece if
// smaller) from one uploader to one downloader; a piece is traded on (a
// Have, the seeder's count) only when all its blocks are in, and its blocks
// may come from different peers. Between events every transfer moves at a
// constant rate: an uploader's capacity is shared max-min fairly among its
// connections on the library, and served one block at a time on the shoal
// engine, to the downloader holding the least first (as p2p's upload turns
// do; the origin: in reveal order, as the seeder's turns do),
// each capped by what its downloader's link leaves (on the engine at least
// an even share of it); a connection carries one block at a time in
// request order.
// What the model does not simulate it takes as parameters measured on the
// real swarm: duplicate blocks after the library moved a request (Waste)
// and the time from a block becoming requestable to its first byte
// (RequestLatency).
package sim

import (
	"errors"
	"fmt"
)

// Config is one simulated run. Rates are bytes per second, times seconds.
type Config struct {
	Agents     int
	BlobBytes  int64
	PieceBytes int64 // 0: the origin's choice by blob size (p2p.PieceLengthFor)
	// Rate caps each agent's upload and download; OriginRate the origin's
	// upload (default Rate); UpstreamRate the registry's upload to the
	// origin (default OriginRate), which paces a cold origin.
	Rate, OriginRate, UpstreamRate float64
	// Warm: the origin holds the blob before the clock starts.
	Warm bool

	// ConnsPerTorrent caps an agent's established connections per blob
	// (p2p.conns_per_torrent); the origin accepts every peer.
	ConnsPerTorrent int
	// HalfOpen is how many dials an agent has in flight at once
	// (the library's HalfOpenConnsPerTorrent).
	HalfOpen int
	// MaxPeers is how many peers the tracker returns per announce
	// (tracker max_peers); AnnounceInterval how often a downloading agent
	// announces (p2p.announce_interval).
	MaxPeers         int
	AnnounceInterval float64
	// Reveal is how many revealed pieces a peer may be fetching from the
	// origin at once (the seeder's reveal).
	Reveal int
	// ChunkBytes is the block an agent requests at a time (p2p's blockSize
	// on the shoal engine, chunkSize on the library; a piece smaller than
	// that is one block). A piece's blocks may come from different peers;
	// a connection carries one block at a time. 0: the engine's.
	ChunkBytes int64
	// QueueDepth is how many blocks an agent may have requested on one
	// connection at once; 0: p2p's requests_per_peer rule from the
	// agent's download cap (20 ms of it, at least one block).
	QueueDepth int
	// Engine is the agents' engine of live swarms (p2p.engine): "shoal"
	// (Shoal's own engine, p2p's default and so the model's; its model
	// fits the real rows measured on it, even and uneven links, late
	// joiners, churn, N = 8-256, 256 MiB and 1 GiB blobs: --calibrate) or
	// "library" (anacrolix/torrent, p2p.engine = "library"). They differ in how
	// connections are made and kept, which piece is asked for next, when a
	// Have goes out (engine.go), and how an agent's upload and download
	// links are shared (reshare).
	Engine string
	// HaveDelay is how long the shoal engine lets a Have wait for the
	// connection's next write (p2p's haveDelay; longer on a link so slow
	// that lazyHaveSpare pieces take longer at its upload cap).
	HaveDelay float64
	// MinStall is the least time the shoal engine lets a peer sit on its
	// requests before it asks others (p2p minStall; the stall time is four
	// of the peer's usual gaps between blocks or eight times the block at
	// the agent's download cap, MinStall to MaxStall).
	MinStall float64
	// MaxStall is the most (p2p maxStall, 3 min; 30 s until 2026-12-04).
	MaxStall float64
	// NoBurst drops the limiters' bursts from the shoal engine's model (a
	// what-if: p2p's limiters let max(rate/20, 64 KiB) go at once after a
	// pause, 5 s of a 12.8 KB/s link; the model before 2026-12-04, night).
	NoBurst bool
	// NoUnderfed drops the underfed rule from the shoal engine's model (p2p
	// since 2026-12-05: an agent whose download, averaged over two ticks,
	// is under 90 % of its cap (80 % until 2026-12-05, night) 3 s after it
	// began keeps twice the requests in flight to its quick peers, the
	// faster half by gap between blocks; the engine before, and the model
	// before 2026-12-05, evening).
	NoUnderfed bool
	// NoSlowerLast drops the slower-last rule from the shoal engine's
	// upload turns (p2p since 2026-12-06: peers tell their upload cap, and
	// an agent serves those under half its own after the others, the
	// origin's uploads aside; the engine before, and the model before).
	NoSlowerLast bool
	// KeepSnubs keeps a snubbed peer free of requests even while its
	// downloader is underfed (p2p before 2026-12-06, midday; the model
	// before: a snub lasted until the peer sent a block or snubFor passed).
	KeepSnubs bool
	// InOrder makes agents ask for the lowest-index piece a peer has
	// instead of the library's rarest-first (availability, then index).
	InOrder bool
	// SerialUploads makes agents on the library upload as the origin and
	// the shoal engine do: one block at a time at the full cap, in request
	// order, instead of sharing their upload among every peer asking (a
	// what-if: the library has no such switch).
	SerialUploads bool

	// UploadOrder is the order in which a shoal engine agent's upload cap
	// serves the blocks asked of it: "behind" (p2p's upload turns since
	// 2026-12-04: the downloader that told the uploader of the fewest
	// pieces first, Sim.toldBy, then request order), "request" (request
	// order, the engine before), "rare" (a
	// what-if, tried on the real swarm and not kept: "behind", each of
	// the uploader's peers known to hold the piece counting as 1/128 of
	// the blob more, up to 7; Sim.copies) or "pace" (a what-if: the
	// downloader furthest behind its own cap first, what it told of
	// against what its download cap could have brought it since it
	// began). The library's model ignores it.
	UploadOrder string
	// Batch (a what-if for the shoal engine, tried on the real swarm and
	// not kept): an agent asks another agent for up to Batch pieces in one
	// go, only once that many slots are free (or none is in flight), and
	// the uploader serves a batch it began to the end before it turns to
	// another downloader; each piece still counts (Have, verification) as
	// it arrives. 0 or 1: a request at a time, as p2p does.
	Batch int
	// EdgePieceBytes, EdgeBytes (a what-if; the origin cuts a blob in
	// pieces of one length): the pieces that begin within EdgeBytes of the
	// blob's start or end are EdgePieceBytes long, those between
	// PieceBytes (the last of them cut short at the end's edge). 0: one
	// length.
	EdgePieceBytes, EdgeBytes int64
	// RTT is the round trip between any two nodes; RequestLatency the time
	// from a piece becoming requestable (a Have, a reveal, a free slot) to
	// the first byte of the answer, beyond one RTT: the library's request
	// update, the uploader's queue and verification of the piece.
	RTT, RequestLatency float64
	// Waste is the fraction of extra bytes every piece costs both ends
	// (blocks received twice after the library moved a request).
	Waste float64
	// JoinSpread: agents that start together announce within this window
	// (metainfo fetch, torrent set-up).
	JoinSpread float64

	// Uneven is the fraction of agents whose links run at Rate/4;
	// SlowConns their conns_per_torrent (bench swarm --slow-conns; 0: as
	// the others').
	Uneven    float64
	SlowConns int
	// Late is the fraction of agents that start when the others are half
	// done (at T_min/2).
	Late float64
	// Churn is the fraction of agents killed mid-pull (uniformly between
	// 20 % and 80 % of T_min) and each replaced by a fresh agent at once.
	Churn float64

	Seed uint64
}

// Defaults are Shoal's settings (p2p, tracker, superseed) and the values
// the calibration against the real bench chose (docs/benchmarks.md).
const (
	DefaultConnsPerTorrent  = 6        // p2p.DefaultConnsPerTorrent
	DefaultHalfOpen         = 25       // anacrolix/torrent's HalfOpenConnsPerTorrent
	DefaultMaxPeers         = 50       // tracker max_peers
	DefaultAnnounceInterval = 3.0      // p2p announce_interval while downloading
	DefaultReveal           = 2        // superseed.Seeder's reveal
	DefaultChunkBytes       = 64 << 10 // p2p chunkSize (the library's block)
	DefaultRTT              = 2e-4     // loopback
	DefaultRequestLatency   = 0.005    // calibrated on the requests_per_peer rows
	DefaultWaste            = 0.03     // bytes received twice / bytes received: 1.5-4 % measured at N = 32-128 (requests_per_peer)
	DefaultJoinSpread       = 0.05
	DefaultHaveDelay        = 0.3 // p2p haveDelay
	DefaultMinStall         = 1.5 // p2p minStall
	DefaultMaxStall         = 180 // p2p maxStall

	// The shoal engine's own measured and fitted values (docs/benchmarks.md).
	DefaultEngineWaste          = 0.005 // bytes received twice: 0.2-0.9 % in the engine's scale rows
	DefaultEngineRequestLatency = 0.005
	DefaultEngineChunkBytes     = 128 << 10 // p2p blockSize (64 KiB until 2026-12-04)
)

// Upload orders of the shoal engine (Config.UploadOrder).
const (
	UploadBehind  = "behind"
	UploadRequest = "request"
	UploadRare    = "rare"
	UploadPace    = "pace"
)

// Engines of live swarms (p2p.EngineShoal, p2p.EngineLibrary).
const (
	EngineShoal   = "shoal"
	EngineLibrary = "library"
)

// ApplyDefaults fills the fields left at zero.
func (c *Config) ApplyDefaults() {
	set := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	setf := func(p *float64, v float64) {
		if *p == 0 {
			*p = v
		}
	}
	if c.PieceBytes == 0 {
		c.PieceBytes = pieceLengthFor(c.BlobBytes)
	}
	setf(&c.OriginRate, c.Rate)
	setf(&c.UpstreamRate, c.OriginRate)
	set(&c.ConnsPerTorrent, DefaultConnsPerTorrent)
	set(&c.HalfOpen, DefaultHalfOpen)
	set(&c.MaxPeers, DefaultMaxPeers)
	setf(&c.AnnounceInterval, DefaultAnnounceInterval)
	set(&c.Reveal, DefaultReveal)
	if c.Engine == "" {
		c.Engine = EngineShoal
	}
	if c.ChunkBytes == 0 {
		c.ChunkBytes = DefaultChunkBytes
		if c.Engine == EngineShoal {
			c.ChunkBytes = DefaultEngineChunkBytes
		}
	}
	setf(&c.HaveDelay, DefaultHaveDelay)
	setf(&c.MinStall, DefaultMinStall)
	setf(&c.MaxStall, DefaultMaxStall)
	if c.UploadOrder == "" {
		c.UploadOrder = UploadBehind
	}
}

// Calibrated returns c with the latency, waste and join spread the
// calibration fitted (zero fields only): the real swarm's loopback bench.
func (c Config) Calibrated() Config {
	if c.RTT == 0 {
		c.RTT = DefaultRTT
	}
	lib := c.Engine == EngineLibrary // unset is the shoal engine (ApplyDefaults)
	if c.RequestLatency == 0 {
		c.RequestLatency = DefaultRequestLatency
		if !lib {
			c.RequestLatency = DefaultEngineRequestLatency
		}
	}
	if c.Waste == 0 {
		c.Waste = DefaultWaste
		if !lib {
			c.Waste = DefaultEngineWaste
		}
	}
	if c.JoinSpread == 0 {
		c.JoinSpread = DefaultJoinSpread
	}
	return c
}

// pieceLengthFor mirrors p2p.PieceLengthFor (a test checks they agree):
// the largest power of two giving at least 512 pieces, 32 KiB to 4 MiB.
func pieceLengthFor(size int64) int64 {
	const lo, hi = 32 << 10, 4 << 20
	pl := int64(lo)
	for pl < hi && 2*pl*512 <= size {
		pl *= 2
	}
	return pl
}

// Validate checks c after ApplyDefaults.
func (c *Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Agents >= 1, "agents: want >= 1, got %d", c.Agents)
	check(c.BlobBytes >= 1, "size: want >= 1 byte, got %d", c.BlobBytes)
	check(c.PieceBytes >= 1, "piece size: want >= 1 byte, got %d", c.PieceBytes)
	check(c.EdgePieceBytes >= 0 && c.EdgeBytes >= 0, "edge pieces: want sizes >= 0, got %d and %d", c.EdgePieceBytes, c.EdgeBytes)
	check(c.EdgePieceBytes == 0 || c.EdgeBytes >= 1, "edge pieces: %d-byte pieces within 0 bytes of the ends", c.EdgePieceBytes)
	if c.PieceBytes >= 1 && c.BlobBytes >= 1 {
		n := (c.BlobBytes + c.PieceBytes - 1) / c.PieceBytes
		if c.EdgePieceBytes >= 1 {
			n += 2 * ((min(c.EdgeBytes, c.BlobBytes) + c.EdgePieceBytes - 1) / c.EdgePieceBytes)
		}
		check(n <= 1<<16, "piece size: %d pieces, want at most 65536", n)
	}
	check(c.Rate > 0 && c.OriginRate > 0 && c.UpstreamRate > 0, "rates: want positive, got rate %g, origin %g, upstream %g", c.Rate, c.OriginRate, c.UpstreamRate)
	check(c.ConnsPerTorrent >= 1 && c.ConnsPerTorrent <= 255, "conns per torrent: want 1..255, got %d", c.ConnsPerTorrent)
	check(c.SlowConns >= 0 && c.SlowConns <= 255, "slow conns: want 0..255 (0: as the others'), got %d", c.SlowConns)
	check(c.HalfOpen >= 1, "half open: want >= 1, got %d", c.HalfOpen)
	check(c.MaxPeers >= 1, "max peers: want >= 1, got %d", c.MaxPeers)
	check(c.AnnounceInterval > 0, "announce interval: want > 0, got %g", c.AnnounceInterval)
	check(c.Reveal >= 1, "reveal: want >= 1, got %d", c.Reveal)
	check(c.Batch >= 0 && c.Batch <= 64, "batch: want 0..64 pieces, got %d", c.Batch)
	check(c.QueueDepth >= 0 && c.QueueDepth <= 255, "queue depth: want 0..255 blocks (0: from the rate), got %d", c.QueueDepth)
	check(c.ChunkBytes >= 1, "chunk size: want >= 1 byte, got %d", c.ChunkBytes)
	if c.ChunkBytes >= 1 && c.PieceBytes >= 1 {
		k := (max(c.PieceBytes, c.EdgePieceBytes) + c.ChunkBytes - 1) / c.ChunkBytes
		check(k <= 255, "chunk size: %d chunks per piece, want at most 255", k)
	}
	check(c.Engine == EngineShoal || c.Engine == EngineLibrary, "engine: want %q or %q, got %q", EngineShoal, EngineLibrary, c.Engine)
	check(c.UploadOrder == UploadBehind || c.UploadOrder == UploadRequest || c.UploadOrder == UploadRare || c.UploadOrder == UploadPace, "upload order: want %q, %q, %q or %q, got %q", UploadBehind, UploadRequest, UploadRare, UploadPace, c.UploadOrder)
	check(c.HaveDelay >= 0, "have delay: want >= 0, got %g", c.HaveDelay)
	check(c.MinStall >= 0, "min stall: want >= 0, got %g", c.MinStall)
	check(c.MaxStall >= c.MinStall, "max stall: want >= min stall (%g), got %g", c.MinStall, c.MaxStall)
	check(c.RTT >= 0 && c.RequestLatency >= 0 && c.JoinSpread >= 0, "latencies: want >= 0")
	check(c.Waste >= 0 && c.Waste < 1, "waste: want 0..1, got %g", c.Waste)
	for _, f := range []struct {
		name string
		v    float64
	}{{"uneven", c.Uneven}, {"late", c.Late}, {"churn", c.Churn}} {
		check(f.v >= 0 && f.v <= 1, "%s: want a fraction 0..1, got %g", f.name, f.v)
	}
	return errors.Join(errs...)
}

// queueFor is the block requests an agent with download cap down keeps in
// flight per connection: QueueDepth, or p2p's requestsPerPeer rule.
func (c *Config) queueFor(down float64) int {
	if c.QueueDepth > 0 {
		return c.QueueDepth
	}
	return max(1, int(down*0.020)/int(c.ChunkBytes))
}
