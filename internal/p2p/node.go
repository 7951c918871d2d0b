// Package p2p runs a node's BitTorrent side: one anacrolix/torrent client per
// node, one torrent per blob (named by its digest), storage straight on the
// blob store, its own announces to the Shoal tracker, and byte accounting by
// source (origin or peer).
package p2p

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
)

// Peer ID prefixes tell peers what kind of node they talk to, so that
// received bytes are counted by source: agents' nodes, and origins'
// super-seeders, which set OriginPeerIDPrefix.
const (
	agentPeerIDPrefix  = "-SA0001-"
	OriginPeerIDPrefix = "-SO0001-"
)

func isOriginPeerID(id [20]byte) bool { return string(id[:3]) == OriginPeerIDPrefix[:3] }

// Config is a node's P2P section ([p2p] in agent and origin files).
type Config struct {
	// Listen is the BitTorrent TCP address. Its host is also the address the
	// node announces and dials from.
	Listen string `toml:"listen"`
	// Trackers are announce URLs ("http://tracker:7600/announce"), tried in
	// order; the role fills them from its own trackers key.
	Trackers []string `toml:"-"`
	// TLS verifies https trackers and presents the role's client
	// certificate to them; the role sets it from its [tls] table (nil:
	// system roots, no certificate). Peer wire traffic is not encrypted.
	TLS *tlsconf.Source `toml:"-"`
	// UploadRate and DownloadRate cap the node's BitTorrent traffic ("0" = no cap).
	UploadRate   config.Rate `toml:"upload_rate"`
	DownloadRate config.Rate `toml:"download_rate"`
	// ConnsPerTorrent caps established connections per blob (both ways).
	ConnsPerTorrent int `toml:"conns_per_torrent"`
	// AnnounceInterval while downloading short of peers to dial
	// (transfer.wantsPeers; the tracker's interval applies once complete,
	// or while the swarm knows peers enough); short so that peers joining
	// together find each other fast. One that knows nobody asks again
	// sooner (lonelyAnnounce).
	AnnounceInterval time.Duration `toml:"announce_interval"`
	// BanTime is how long a peer that sent a bad piece is neither dialled
	// nor accepted.
	BanTime time.Duration `toml:"ban_time"`
	// RequestsPerPeer caps the block requests a node keeps in flight to one
	// peer (blocks of 128 KiB on the shoal engine, 64 KiB on the library);
	// 0 picks one from DownloadRate (see requestsPerPeer).
	RequestsPerPeer int `toml:"requests_per_peer"`
	// Engine moves the blocks of live swarms: "shoal" (engine.go, the
	// default: in the scale set as fast or faster at a third to a half of
	// the CPU, and 1.04-1.12x in the standard set) or "library"
	// (anacrolix/torrent, the default until 2026-12-03; see
	// docs/benchmarks.md "CPU per GiB"). The two trade with each other.
	Engine string `toml:"engine"`
	// MaxSwarms caps the blobs an agent is in the swarms of at once: past
	// it, the swarms (live and standard) of the least recently used
	// complete blob are left (the blob stays cached, and is seeded again
	// when next served). Downloads are never left for it.
	MaxSwarms int `toml:"max_swarms"`
}

// DefaultConnsPerTorrent is the default of conns_per_torrent. Every
// connection costs a node the same per-piece work (a Have to send, its
// requests to weigh) and gives the library one more peer to move block
// requests to, which sends blocks twice. Kraken keeps 10 per torrent,
// Dragonfly 4 parents. In Shoal's benchmark (cold, 256 MiB), 6 instead of
// 50 took the 32-agent swarm from 1.43x to 1.09-1.10x T_min and from 115
// to 69-72 core-s, the 16-agent one from 1.12-1.13x to 1.10x and from
// 39-41 to 32-35 core-s, the origin still sending 1.00 F; 8 was as fast
// but left the 32-agent run CPU-bound on 2 cores.
const DefaultConnsPerTorrent = 6

// requestsPerPeer is the request limit the node holds its peers to, 0 for
// the library's own (it raises a peer's limit towards the 250-1024 the
// peer allows as requests are answered). Requests past what the node's
// capped link carries in about a round trip only queue behind each other,
// and a queued request is what the library moves to a peer that became
// free: the first peer's copy, already on its way, then arrives too, and
// the node's link carries the block twice. With a download cap set and
// requests_per_peer unset, the limit is 20 ms of that cap, at least one
// block: a 128-agent swarm at 0.5 MB/s (one block per peer) received 3 %
// of its bytes twice instead of 5.5 % and finished at 1.11x T_min instead
// of 1.13x; 32 agents at 6.25 MB/s 1.09x instead of 1.11x.
func (c *Config) requestsPerPeer() int {
	if c.RequestsPerPeer > 0 || c.DownloadRate <= 0 {
		return c.RequestsPerPeer
	}
	return RequestsPerPeerFor(c.DownloadRate, c.Engine)
}

// RequestsPerPeerFor is requests_per_peer's default for a download cap on
// an engine: 20 ms of the cap in that engine's blocks, at least one.
func RequestsPerPeerFor(downloadRate config.Rate, engine string) int {
	block := blockSize
	if engine == EngineLibrary {
		block = chunkSize
	}
	return max(1, int(float64(downloadRate)*0.020)/block)
}

// DefaultMaxSwarms is the default of max_swarms.
const DefaultMaxSwarms = 512

// DefaultBanTime of a peer that sent a bad piece.
const DefaultBanTime = 30 * time.Minute

// ApplyDefaults fills unset keys; listen is the role's default address and
// trackers the role's tracker base URLs (announces go to <base>/announce).
func (c *Config) ApplyDefaults(listen string, trackers []string) {
	c.Trackers = nil
	for _, t := range trackers {
		c.Trackers = append(c.Trackers, proto.AnnounceURL(t))
	}
	config.SetDefault(&c.Listen, listen)
	config.SetDefault(&c.ConnsPerTorrent, DefaultConnsPerTorrent)
	config.SetDefault(&c.AnnounceInterval, 3*time.Second)
	config.SetDefault(&c.BanTime, DefaultBanTime)
	config.SetDefault(&c.MaxSwarms, DefaultMaxSwarms)
	config.SetDefault(&c.Engine, EngineShoal)
}

// Engines of live swarms (the engine key).
const (
	EngineLibrary = "library"
	EngineShoal   = "shoal"
)

// Validate checks the section; prefix is the TOML table name ("p2p").
func (c *Config) Validate(prefix string) error {
	if err := config.FirstError(config.CheckAddrPort(prefix+".listen", c.Listen),
		config.CheckURLs(prefix+".trackers", c.Trackers)); err != nil {
		return err
	}
	if c.UploadRate < 0 || c.DownloadRate < 0 {
		return config.Errorf(prefix+".upload_rate", "must not be negative")
	}
	if c.ConnsPerTorrent < 1 || c.ConnsPerTorrent > 1000 {
		return config.Errorf(prefix+".conns_per_torrent", "want 1..1000, got %d", c.ConnsPerTorrent)
	}
	if c.RequestsPerPeer < 0 || c.RequestsPerPeer > 10000 {
		return config.Errorf(prefix+".requests_per_peer", "want 0..10000 (0: from download_rate), got %d", c.RequestsPerPeer)
	}
	if c.AnnounceInterval < 100*time.Millisecond {
		return config.Errorf(prefix+".announce_interval", "want at least 100ms, got %s", c.AnnounceInterval)
	}
	if c.BanTime < time.Second {
		return config.Errorf(prefix+".ban_time", "want at least 1s, got %s", c.BanTime)
	}
	if c.Engine != EngineLibrary && c.Engine != EngineShoal {
		return config.Errorf(prefix+".engine", "want %q or %q, got %q", EngineLibrary, EngineShoal, c.Engine)
	}
	if c.MaxSwarms < 1 || c.MaxSwarms > 1_000_000 {
		return config.Errorf(prefix+".max_swarms", "want 1..1000000, got %d", c.MaxSwarms)
	}
	return nil
}

// Node is one node's BitTorrent side: the library's client, the engine
// (when p2p.engine is "shoal": it then runs the live swarms and the library
// only seeds standard torrents), and its swarms.
type Node struct {
	cfg     Config
	log     *slog.Logger
	eng     *engine // nil: the library runs every swarm
	cl      *torrent.Client
	addr    netip.AddrPort
	peerID  [20]byte
	tracker *TrackerClient

	fromOrigins, fromPeers atomic.Int64
	announcesAsked         atomic.Int64 // announces that asked the tracker for peers
	announcesQuiet         atomic.Int64 // with numwant=0 (Swarm.announce)
	announcesSkipped       atomic.Int64 // ticks with no announce (Swarm.announceLoop)

	bans      *banList
	bansTotal atomic.Int64
	// downloads maps an info-hash to its download storage, for the blame
	// of blocks the library received. A sync.Map: the library calls back
	// with its own lock held, and add holds mu while calling into the
	// library.
	downloads sync.Map
	mu        sync.Mutex
	swarms    map[string]*Swarm // live torrents, by digest
	// standard holds the standard torrents (standard.go), by digest: a
	// blob held complete is in two swarms, under two info-hashes.
	standard map[string]*Swarm
	closed   bool // Close began: no swarm may join any more
}

// NewNode starts the client listening on cfg.Listen.
func NewNode(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Node, error) {
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p listen %q: %w", cfg.Listen, err)
	}
	n := &Node{cfg: cfg, log: log, swarms: map[string]*Swarm{}, standard: map[string]*Swarm{}, bans: newBanList()}
	copy(n.peerID[:], agentPeerIDPrefix)
	if _, err := rand.Read(n.peerID[8:]); err != nil {
		return nil, err
	}

	var up, down *rate.Limiter
	if cfg.UploadRate > 0 {
		up = NewLimiter(cfg.UploadRate)
		if cfg.Engine == EngineLibrary && up.Burst() < maxBlock {
			// The library refuses a request longer than its upload
			// burst, and agents on the shoal engine ask for 128 KiB.
			up.SetBurst(maxBlock)
		}
	}
	if cfg.DownloadRate > 0 {
		down = NewLimiter(cfg.DownloadRate)
	}
	cc := torrent.NewDefaultClientConfig()
	cc.PeerID = string(n.peerID[:])
	cc.NoDHT, cc.DisableUTP, cc.DisablePEX = true, true, true
	cc.DisableTrackers, cc.DisableWebtorrent, cc.DisableWebseeds = true, true, true
	cc.NoDefaultPortForwarding = true
	cc.DisableIPv6 = ap.Addr().Is4()
	cc.Seed = true // keep uploading while downloading
	cc.DropDuplicatePeerIds = true
	cc.EstablishedConnsPerTorrent = cfg.ConnsPerTorrent
	cc.DefaultStorage = refuseStorage{}
	cc.Slogger = slog.New(minLevel{log.Handler(), slog.LevelWarn}).With("component", "torrent")
	if up != nil {
		cc.UploadRateLimiter = up
	}
	if down != nil {
		cc.DownloadRateLimiter = down
	}
	cc.IPBlocklist = n.bans
	if cfg.Engine == EngineShoal {
		// The engine owns the port; the library seeds standard torrents on
		// the connections it hands over, and dials nobody.
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("p2p listen %s: %w", cfg.Listen, err)
		}
		n.addr = netip.AddrPortFrom(ap.Addr(), uint16(ln.Addr().(*net.TCPAddr).Port))
		n.eng = newEngine(n, ln, up, down)
		cc.DisableTCP = true
	} else {
		cc.SetListenAddr(cfg.Listen)
		n.libraryLiveSwarms(cc)
	}
	cl, err := torrent.NewClient(cc)
	if err != nil {
		if n.eng != nil {
			n.eng.close()
		}
		return nil, fmt.Errorf("p2p listen %s: %w", cfg.Listen, err)
	}
	n.cl = cl
	// The library's webseed timer fires 5 s after NewClient (and every 5 s
	// after) and, under the client's lock, reads the timer field NewClient
	// wrote without it. Taking the lock once here orders that write first;
	// without it the race detector failed any test whose node lived 5 s
	// with no other call into the client from this goroutine.
	_ = cl.ListenAddrs()
	if n.eng != nil {
		cl.AddListener(n.eng.lib)
	} else {
		for _, a := range cl.ListenAddrs() {
			if tcp, ok := a.(*net.TCPAddr); ok {
				n.addr = netip.AddrPortFrom(ap.Addr(), uint16(tcp.Port))
			}
		}
		if !n.addr.IsValid() {
			cl.Close()
			return nil, fmt.Errorf("p2p listen %s: no TCP listener", cfg.Listen)
		}
	}
	n.tracker = NewTrackerClient(cfg.Trackers, ap.Addr(), cfg.TLS)
	if reg != nil {
		n.register(reg)
	}
	return n, nil
}

// chunkSize is the block a node requests at a time. The library's 16 KiB
// default spends a third of a swarm's CPU on per-block work (a request, a
// message, a pwrite, request bookkeeping for each); 64 KiB cut a 16-agent
// run from 46 to 36 core-seconds and its p50 from 1.17x to 1.11-1.12x
// T_min. Larger blocks waste more when the library moves a request to a
// faster peer after the first peer already sent it (128 KiB: no faster).
// Origins' seeders accept up to 128 KiB (superseed's maxBlock). The shoal
// engine asks for blockSize.
const chunkSize = 64 << 10

// NewLimiter caps a node's (or a seeder's) traffic at r bytes/s.
func NewLimiter(r config.Rate) *rate.Limiter {
	// An explicit burst: the library turns 0 into max(limit, 1 MiB), which
	// lets a capped node run far over its rate for the first second. It is
	// at least the library's block, or it refuses requests as too long;
	// larger blocks wait in parts (WaitN). No larger: a block that finds
	// the tokens there goes first come, not in the upload turns' order.
	burst := max(int(r/20), chunkSize)
	return rate.NewLimiter(rate.Limit(r), burst)
}

// WaitN waits until n bytes may pass l, in parts of at most its burst: a
// block may be larger than a slow link's burst.
func WaitN(ctx context.Context, l *rate.Limiter, n int) error {
	for n > 0 {
		k := part(l, n)
		if err := l.WaitN(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// part is how much of n bytes l passes at once: at most its burst.
func part(l *rate.Limiter, n int) int {
	if b := l.Burst(); b > 0 {
		return min(n, b)
	}
	return n
}

// reserveN reserves n bytes of l at now, in parts of at most its burst,
// and returns how long to wait for them and how to give them back.
func reserveN(l *rate.Limiter, now time.Time, n int) (time.Duration, func()) {
	var rs []*rate.Reservation
	var d time.Duration
	for n > 0 {
		k := part(l, n)
		r := l.ReserveN(now, k)
		rs = append(rs, r)
		d = r.DelayFrom(now)
		n -= k
	}
	return d, func() {
		for i := len(rs) - 1; i >= 0; i-- {
			rs[i].Cancel()
		}
	}
}

// AnnouncesHelp describes shoal_p2p_announces_total.
const AnnouncesHelp = "Announces sent to the tracker, by whether they asked for peers (asked) or not (none: numwant=0, " +
	"a seed of a standard torrent or a swarm that knows enough peers to dial)."

func (n *Node) register(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_received_bytes_total",
			Help: "Verified-useful piece bytes received over BitTorrent.", ConstLabels: prometheus.Labels{"source": "origin"}},
			func() float64 { return float64(n.fromOrigins.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_received_bytes_total",
			Help: "Verified-useful piece bytes received over BitTorrent.", ConstLabels: prometheus.Labels{"source": "peer"}},
			func() float64 { return float64(n.fromPeers.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_sent_bytes_total",
			Help: "Piece bytes sent over BitTorrent."},
			func() float64 { return float64(n.BytesSent()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_wasted_bytes_total",
			Help: "Piece bytes received but not needed: a chunk that came twice, or part of a piece that failed."},
			func() float64 { return float64(n.BytesWasted()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_requests_moved_total",
			Help: "Block requests a peer sat on past its stall time, taken back and asked of another peer (the shoal engine)."},
			func() float64 { return float64(n.RequestsMoved()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_p2p_swarms", Help: SwarmsHelp},
			func() float64 { n.mu.Lock(); defer n.mu.Unlock(); return float64(len(n.swarms) + len(n.standard)) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_peer_bans_total",
			Help: "Peers banned for p2p.ban_time after sending a bad piece."},
			func() float64 { return float64(n.bansTotal.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_p2p_banned_peers", Help: "Peers banned now."},
			func() float64 { return float64(n.bans.numBans()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_announces_total",
			Help: AnnouncesHelp, ConstLabels: prometheus.Labels{"peers": "asked"}},
			func() float64 { return float64(n.announcesAsked.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_announces_total",
			Help: AnnouncesHelp, ConstLabels: prometheus.Labels{"peers": "none"}},
			func() float64 { return float64(n.announcesQuiet.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_p2p_announces_skipped_total",
			Help: "Announces not sent while downloading: the swarm knew peers enough to dial and had announced within the tracker's interval."},
			func() float64 { return float64(n.announcesSkipped.Load()) }),
	)
}

// Banned reports whether peer address a is banned now.
func (n *Node) Banned(a netip.Addr) bool { return n.bans.banned(a) }

// ban bans peers that sent bad blocks and drops their connections.
func (n *Node) ban(peers []netip.Addr) {
	for _, a := range peers {
		if n.bans.ban(a, n.cfg.BanTime) {
			n.bansTotal.Add(1)
			n.log.Warn("banned a peer that sent a bad piece", "peer", a, "ban_time", n.cfg.BanTime)
		}
	}
	n.closeBlocked()
}

// suspendTime is how long a suspect is held off: long enough for the piece
// it may have spoiled to be fetched again from the others.
const suspendTime = 5 * time.Second

// blocked reports whether a is banned or held off.
func (n *Node) blocked(a netip.Addr) bool { return n.bans.blocked(a) }

// suspect holds peer a off for suspendTime, min p2p.ban_time, without
// banning it: it contributed to a piece that failed along with others
// (see blame).
func (n *Node) suspect(a netip.Addr) {
	n.bans.hold(a, min(suspendTime, n.cfg.BanTime))
	n.log.Info("held off a peer that sent part of a bad piece", "peer", a, "for", min(suspendTime, n.cfg.BanTime))
	n.closeBlocked()
}

// closeBlocked drops the connections of banned and held peers.
func (n *Node) closeBlocked() {
	// Not from here: the library is hashing and may hold its locks.
	go func() {
		for _, s := range n.allSwarms() {
			s.m.closeBanned(n.bans.blocked)
		}
	}()
}

func peerAddr(ra interface{ String() string }) (netip.Addr, bool) {
	if ra == nil {
		return netip.Addr{}, false
	}
	ap, err := netip.ParseAddrPort(ra.String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// libraryLiveSwarms sets the library up to run live swarms (p2p.engine
// "library").
func (n *Node) libraryLiveSwarms(cc *torrent.ClientConfig) {
	// The library only considers the first MaxUnverifiedBytes of its piece
	// order for requests, whoever holds them; an origin that reveals pieces
	// one by one (superseed.Seeder) may reveal one outside that window, and
	// the agent would never ask for it. Blobs are bounded: consider every
	// piece.
	cc.MaxUnverifiedBytes = 0
	// Plain handshakes only: origins' seeders speak no MSE, and obfuscation
	// buys nothing inside a cluster. Required, not just preferred: otherwise
	// the library redials every peer that closed a plain handshake (a full
	// peer does) to retry it with MSE, a Diffie-Hellman exchange that fails
	// the same way (6 % of a 256-agent swarm's CPU went to dials and MSE).
	cc.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{RequirePreferred: true}
	cc.Callbacks.ReceivedUsefulData = append(cc.Callbacks.ReceivedUsefulData, n.countReceived)
	cc.Callbacks.SentRequest = append(cc.Callbacks.SentRequest, func(ev torrent.PeerRequestEvent) { n.countRequest(ev, 1) })
	cc.Callbacks.DeletedRequest = append(cc.Callbacks.DeletedRequest, func(ev torrent.PeerRequestEvent) { n.countRequest(ev, -1) })
	if q := n.cfg.requestsPerPeer(); q > 0 {
		// The library takes a peer's request limit from its extended
		// handshake, and this callback sees the message before it does.
		cc.Callbacks.ReadExtendedHandshake = func(_ *torrent.PeerConn, d *pp.ExtendedHandshakeMessage) { d.Reqq = q }
	}
}

func (n *Node) countReceived(ev torrent.ReceivedUsefulDataEvent) {
	if st, ok := n.downloads.Load(ev.Peer.Torrent().InfoHash()); ok {
		if a, ok := peerAddr(ev.Peer.RemoteAddr); ok {
			st.(*blobStorage).blame.received(int(ev.Message.Index), int64(ev.Message.Begin), a, ev.Message.Piece)
		}
	}
	size := int64(len(ev.Message.Piece))
	if pc, ok := ev.Peer.TryAsPeerConn(); ok && isOriginPeerID(pc.PeerID) {
		n.fromOrigins.Add(size)
		return
	}
	n.fromPeers.Add(size)
}

// Addr is the address peers reach this node at.
func (n *Node) Addr() netip.AddrPort { return n.addr }

// BytesFromOrigins and BytesFromPeers count verified piece data received.
func (n *Node) BytesFromOrigins() int64 { return n.fromOrigins.Load() }
func (n *Node) BytesFromPeers() int64   { return n.fromPeers.Load() }

// BytesWasted counts piece data received that was not needed: a chunk that
// came twice (requested from two peers), or part of a piece that failed.
func (n *Node) BytesWasted() int64 {
	s := n.cl.Stats()
	w := s.BytesReadData.Int64() - s.BytesReadUsefulData.Int64()
	if n.eng != nil {
		w += n.eng.wasted.Load()
	}
	return w
}

// RequestsMoved counts block requests a peer sat on past its stall time,
// taken back and asked of another (the engine's stall rule).
func (n *Node) RequestsMoved() int64 {
	if n.eng == nil {
		return 0
	}
	return n.eng.moved.Load()
}

// BytesSent counts piece data this node uploaded.
func (n *Node) BytesSent() int64 {
	s := n.cl.Stats()
	sent := s.BytesWrittenData.Int64()
	if n.eng != nil {
		sent += n.eng.sent.Load()
	}
	return sent
}

// SwarmsHelp describes the shoal_p2p_swarms gauge of nodes and seeders.
const SwarmsHelp = "Torrents this node is in the swarm of (a blob held complete has two: its live and its standard torrent)."

func (n *Node) allSwarms() []*Swarm {
	n.mu.Lock()
	defer n.mu.Unlock()
	swarms := make([]*Swarm, 0, len(n.swarms)+len(n.standard))
	for _, s := range n.swarms {
		swarms = append(swarms, s)
	}
	for _, s := range n.standard {
		swarms = append(swarms, s)
	}
	return swarms
}

// byDigest is the map that holds swarms of mi's kind.
func (n *Node) byDigest(mi *MetaInfo) map[string]*Swarm {
	if mi.Standard {
		return n.standard
	}
	return n.swarms
}

// Close leaves every swarm and stops the client.
func (n *Node) Close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	for _, s := range n.allSwarms() {
		s.Close()
	}
	// The library first: its accept loop spins on a closed handoff
	// listener until it sees itself closed.
	n.cl.Close()
	if n.eng != nil {
		n.eng.close()
	}
}

// Swarm returns the live swarm of blob d, if this node is in it.
func (n *Node) Swarm(d string) *Swarm {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.swarms[d]
}

// StandardSwarm returns the swarm of blob d's standard torrent, if this
// node seeds it.
func (n *Node) StandardSwarm(d string) *Swarm {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.standard[d]
}

// Touch marks the swarms of blob d as used now (its blob was served), for
// max_swarms; it reports whether the node is in the live and in the
// standard swarm.
func (n *Node) Touch(d string) (live, standard bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	for _, s := range []*Swarm{n.swarms[d], n.standard[d]} {
		if s != nil {
			s.lastUse = now
		}
	}
	return n.swarms[d] != nil, n.standard[d] != nil
}

// Leave leaves both swarms of blob d (it was evicted from the cache).
func (n *Node) Leave(d string) {
	n.mu.Lock()
	live, std := n.swarms[d], n.standard[d]
	n.mu.Unlock()
	for _, s := range []*Swarm{live, std} {
		if s != nil {
			s.Close()
		}
	}
}

// evictLocked picks the swarms of the least recently used complete blob to
// leave when a swarm of another blob than d joins and the node is in the
// swarms of max_swarms blobs (none if below, or if every blob downloads).
// A blob's live and standard swarm count once, and go together.
func (n *Node) evictLocked(d string) []*Swarm {
	blobs := len(n.swarms)
	for k := range n.standard {
		if n.swarms[k] == nil {
			blobs++
		}
	}
	if n.swarms[d] != nil || n.standard[d] != nil || blobs < n.cfg.MaxSwarms {
		return nil
	}
	var lru string
	var lruUse time.Time
	for _, m := range []map[string]*Swarm{n.swarms, n.standard} {
		for k := range m {
			live, std := n.swarms[k], n.standard[k]
			if live != nil && live.dl != nil && !live.Complete() {
				continue
			}
			var use time.Time
			for _, s := range []*Swarm{live, std} {
				if s != nil && s.lastUse.After(use) {
					use = s.lastUse
				}
			}
			if lru == "" || use.Before(lruUse) {
				lru, lruUse = k, use
			}
		}
	}
	var out []*Swarm
	for _, s := range []*Swarm{n.swarms[lru], n.standard[lru]} {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// ErrClosed: the node is closing, and joins no swarm.
var ErrClosed = errors.New("p2p: node closed")

// ErrInSwarm: the node already has a swarm for this blob.
var ErrInSwarm = errors.New("p2p: already in the swarm of this blob")

// Seed joins the swarm of mi (live or standard) as a seeder of the verified
// blob r; onClose (closing r) runs a moment after the swarm is left, never
// while a peer's read may still come. If Seed fails, r is the caller's to
// close.
func (n *Node) Seed(mi *MetaInfo, r io.ReaderAt, onClose func()) (*Swarm, error) {
	return n.add(mi, newSeedStorage(r, onClose, &mi.Info), nil, nil)
}

// Download joins the swarm of mi and writes pieces into dl, checking each
// against hashes (which may still be arriving); the blob commits when the
// last piece is in and the sha256 matches. The swarm keeps seeding
// afterwards until closed. Download takes over the caller's reference to dl.
func (n *Node) Download(mi *MetaInfo, dl *store.Download, hashes *PieceHashes) (*Swarm, error) {
	if dl.Size() != mi.Info.Length {
		return nil, fmt.Errorf("p2p %s: metainfo says %d bytes, download expects %d", mi.Digest, mi.Info.Length, dl.Size())
	}
	if hashes.PieceLength() != mi.Info.PieceLength || hashes.NumPieces() != mi.Info.NumPieces() {
		return nil, fmt.Errorf("p2p %s: piece hashes are for %d-byte pieces, metainfo has %d", mi.Digest, hashes.PieceLength(), mi.Info.PieceLength)
	}
	if n.cfg.Engine == EngineLibrary && hashes.Kind() != HashSHA1 {
		return nil, fmt.Errorf("p2p %s: the library engine checks SHA-1 piece hashes, not %s", mi.Digest, hashes.Kind())
	}
	rf, err := dl.OpenFile()
	if err != nil {
		return nil, fmt.Errorf("p2p %s: %w", mi.Digest, err)
	}
	s, err := n.add(mi, newDownloadStorage(dl, rf, &mi.Info, hashes, n), dl, dl.Release)
	if err != nil {
		rf.Close()
		return nil, err
	}
	dl.SetWant(s.want)
	return s, nil
}

func (n *Node) add(mi *MetaInfo, st *blobStorage, dl *store.Download, onClose func()) (*Swarm, error) {
	key := mi.Digest.String()
	ctx, cancel := context.WithCancel(context.Background())
	st.ctx = ctx
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		cancel()
		return nil, ErrClosed
	}
	if _, ok := n.byDigest(mi)[key]; ok {
		n.mu.Unlock()
		cancel()
		return nil, ErrInSwarm
	}
	var m member
	var lt *torrent.Torrent
	if mi.Standard || n.eng == nil {
		t, isNew := n.cl.AddTorrentOpt(torrent.AddTorrentOpts{InfoHash: mi.InfoHash, InfoBytes: mi.InfoBytes, Storage: st, ChunkSize: chunkSize})
		if !isNew {
			n.mu.Unlock()
			cancel()
			return nil, ErrInSwarm
		}
		lt, m = t, libTorrent{t}
		if dl != nil {
			n.downloads.Store(mi.InfoHash, st)
		}
	} else {
		t, err := n.eng.add(mi, st)
		if err != nil {
			n.mu.Unlock()
			cancel()
			return nil, err
		}
		m = t
	}
	s := &Swarm{n: n, mi: mi, m: m, st: st, dl: dl, onClose: onClose, cancel: cancel, announced: make(chan struct{})}
	s.lastUse = time.Now()
	evict := n.evictLocked(key)
	n.byDigest(mi)[key] = s
	n.mu.Unlock()
	for _, e := range evict {
		n.log.Debug("left a swarm of the least recently used blob (max_swarms)", "digest", e.mi.Digest, "standard", e.mi.Standard, "max_swarms", n.cfg.MaxSwarms)
		go e.Close()
	}
	if lt != nil {
		lt.DownloadAll()
		if dl != nil {
			// The first raise before any peer is told of: the library's
			// first request to a peer would otherwise race the nudger's
			// goroutine and go rarest first.
			raised := s.nudge(lt, -1)
			s.wg.Go(func() { s.nudgeLoop(ctx, lt, raised) })
		}
	}
	s.wg.Go(func() { s.announceLoop(ctx) })
	return s, nil
}

// minLevel drops records below a level (the torrent library is chatty).
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(g string) slog.Handler { return minLevel{h.Handler.WithGroup(g), h.min} }
