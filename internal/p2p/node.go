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
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/store"
)

// Role tells peers (through the peer ID prefix) what kind of node this is,
// so that received bytes can be counted by source.
type Role int

const (
	RoleAgent Role = iota
	RoleOrigin
)

func (r Role) prefix() string {
	if r == RoleOrigin {
		return "-SO0001-"
	}
	return "-SA0001-"
}

func isOriginPeerID(id [20]byte) bool { return string(id[:3]) == "-SO" }

// Config is a node's P2P section ([p2p] in agent and origin files).
type Config struct {
	// Listen is the BitTorrent TCP address. Its host is also the address the
	// node announces and dials from.
	Listen string `toml:"listen"`
	// Trackers are announce URLs ("http://tracker:7600/announce"), tried in
	// order; the role fills them from its own trackers key.
	Trackers []string `toml:"-"`
	// UploadRate and DownloadRate cap the node's BitTorrent traffic ("0" = no cap).
	UploadRate   config.Rate `toml:"upload_rate"`
	DownloadRate config.Rate `toml:"download_rate"`
	// ConnsPerTorrent caps established connections per blob.
	ConnsPerTorrent int `toml:"conns_per_torrent"`
	// AnnounceInterval while downloading (the tracker's interval applies once
	// complete); short so that peers joining together find each other fast.
	AnnounceInterval time.Duration `toml:"announce_interval"`
}

// ApplyDefaults fills unset keys; listen is the role's default address and
// trackers the role's tracker base URLs (announces go to <base>/announce).
func (c *Config) ApplyDefaults(listen string, trackers []string) {
	c.Trackers = nil
	for _, t := range trackers {
		c.Trackers = append(c.Trackers, strings.TrimSuffix(t, "/")+"/announce")
	}
	if c.Listen == "" {
		c.Listen = listen
	}
	if c.ConnsPerTorrent == 0 {
		c.ConnsPerTorrent = 50
	}
	if c.AnnounceInterval == 0 {
		c.AnnounceInterval = 3 * time.Second
	}
}

// Validate checks the section; prefix is the TOML table name ("p2p").
func (c *Config) Validate(prefix string) error {
	if _, err := netip.ParseAddrPort(c.Listen); err != nil {
		return config.Errorf(prefix+".listen", "want IP:port, got %q", c.Listen)
	}
	for i, u := range c.Trackers {
		if err := config.CheckHTTPURL(u); err != nil {
			return config.Errorf(fmt.Sprintf("%s.trackers[%d]", prefix, i), "%v", err)
		}
	}
	if c.UploadRate < 0 || c.DownloadRate < 0 {
		return config.Errorf(prefix+".upload_rate", "must not be negative")
	}
	if c.ConnsPerTorrent < 1 || c.ConnsPerTorrent > 1000 {
		return config.Errorf(prefix+".conns_per_torrent", "want 1..1000, got %d", c.ConnsPerTorrent)
	}
	if c.AnnounceInterval < 100*time.Millisecond {
		return config.Errorf(prefix+".announce_interval", "want at least 100ms, got %s", c.AnnounceInterval)
	}
	return nil
}

// Node is one BitTorrent client with its swarms.
type Node struct {
	cfg     Config
	role    Role
	log     *slog.Logger
	cl      *torrent.Client
	addr    netip.AddrPort
	peerID  [20]byte
	tracker *trackerClient

	fromOrigins, fromPeers atomic.Int64

	mu     sync.Mutex
	swarms map[string]*Swarm // by digest
}

// NewNode starts the client listening on cfg.Listen.
func NewNode(cfg Config, role Role, log *slog.Logger, reg prometheus.Registerer) (*Node, error) {
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p listen %q: %w", cfg.Listen, err)
	}
	n := &Node{cfg: cfg, role: role, log: log, swarms: map[string]*Swarm{}}
	copy(n.peerID[:], role.prefix())
	if _, err := rand.Read(n.peerID[8:]); err != nil {
		return nil, err
	}

	cc := torrent.NewDefaultClientConfig()
	cc.SetListenAddr(cfg.Listen)
	cc.PeerID = string(n.peerID[:])
	cc.NoDHT, cc.DisableUTP, cc.DisablePEX = true, true, true
	cc.DisableTrackers, cc.DisableWebtorrent, cc.DisableWebseeds = true, true, true
	cc.NoDefaultPortForwarding = true
	cc.DisableIPv6 = ap.Addr().Is4()
	cc.Seed = true // keep uploading while downloading
	cc.DropDuplicatePeerIds = true
	// The library only considers the first MaxUnverifiedBytes of its piece
	// order for requests, whoever holds them; an origin that reveals pieces
	// one by one (Seeder) may reveal one outside that window, and the agent
	// would never ask for it. Blobs are bounded, so consider every piece.
	cc.MaxUnverifiedBytes = 0
	// Plain handshakes: origins' seeders speak no MSE, and obfuscation buys
	// nothing inside a cluster.
	cc.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{}
	cc.EstablishedConnsPerTorrent = cfg.ConnsPerTorrent
	cc.DefaultStorage = refuseStorage{}
	cc.Slogger = slog.New(minLevel{log.Handler(), slog.LevelWarn}).With("component", "torrent")
	if cfg.UploadRate > 0 {
		cc.UploadRateLimiter = newLimiter(cfg.UploadRate)
	}
	if cfg.DownloadRate > 0 {
		cc.DownloadRateLimiter = newLimiter(cfg.DownloadRate)
	}
	cc.Callbacks.ReceivedUsefulData = append(cc.Callbacks.ReceivedUsefulData, n.countReceived)

	cl, err := torrent.NewClient(cc)
	if err != nil {
		return nil, fmt.Errorf("p2p listen %s: %w", cfg.Listen, err)
	}
	n.cl = cl
	for _, a := range cl.ListenAddrs() {
		if tcp, ok := a.(*net.TCPAddr); ok {
			n.addr = netip.AddrPortFrom(ap.Addr(), uint16(tcp.Port))
		}
	}
	if !n.addr.IsValid() {
		cl.Close()
		return nil, fmt.Errorf("p2p listen %s: no TCP listener", cfg.Listen)
	}
	n.tracker = newTrackerClient(cfg.Trackers, ap.Addr())
	if reg != nil {
		n.register(reg)
	}
	return n, nil
}

func newLimiter(r config.Rate) *rate.Limiter {
	// An explicit burst: the library turns 0 into max(limit, 1 MiB), which
	// lets a capped node run far over its rate for the first second.
	burst := max(int(r/20), 64<<10)
	return rate.NewLimiter(rate.Limit(r), burst)
}

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
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_p2p_swarms", Help: "Blobs this node is in the swarm of."},
			func() float64 { n.mu.Lock(); defer n.mu.Unlock(); return float64(len(n.swarms)) }),
	)
}

func (n *Node) countReceived(ev torrent.ReceivedUsefulDataEvent) {
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

// BytesSent counts piece data this node uploaded.
func (n *Node) BytesSent() int64 {
	s := n.cl.Stats()
	return s.BytesWrittenData.Int64()
}

// Close leaves every swarm and stops the client.
func (n *Node) Close() {
	n.mu.Lock()
	swarms := make([]*Swarm, 0, len(n.swarms))
	for _, s := range n.swarms {
		swarms = append(swarms, s)
	}
	n.mu.Unlock()
	for _, s := range swarms {
		s.Close()
	}
	n.cl.Close()
}

// Swarm returns the swarm of blob d, if this node is in it.
func (n *Node) Swarm(d string) *Swarm {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.swarms[d]
}

// ErrInSwarm: the node already has a swarm for this blob.
var ErrInSwarm = errors.New("p2p: already in the swarm of this blob")

// Seed joins the swarm of mi as a seeder of the verified blob r.
func (n *Node) Seed(mi *MetaInfo, r io.ReaderAt, onClose func()) (*Swarm, error) {
	return n.add(mi, newSeedStorage(r, &mi.Info), nil, onClose)
}

// Download joins the swarm of mi and writes pieces into dl; the blob commits
// when the last piece is in and the sha256 matches. The swarm keeps seeding
// afterwards until closed. Download takes over the caller's reference to dl.
func (n *Node) Download(mi *MetaInfo, dl *store.Download) (*Swarm, error) {
	if dl.Size() != mi.Info.Length {
		return nil, fmt.Errorf("p2p %s: metainfo says %d bytes, download expects %d", mi.Digest, mi.Info.Length, dl.Size())
	}
	return n.add(mi, newDownloadStorage(dl, &mi.Info), dl, dl.Release)
}

func (n *Node) add(mi *MetaInfo, st *blobStorage, dl *store.Download, onClose func()) (*Swarm, error) {
	key := mi.Digest.String()
	n.mu.Lock()
	if _, ok := n.swarms[key]; ok {
		n.mu.Unlock()
		return nil, ErrInSwarm
	}
	t, isNew := n.cl.AddTorrentOpt(torrent.AddTorrentOpts{InfoHash: mi.InfoHash, InfoBytes: mi.InfoBytes, Storage: st})
	if !isNew {
		n.mu.Unlock()
		return nil, ErrInSwarm
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Swarm{n: n, mi: mi, t: t, dl: dl, onClose: onClose, cancel: cancel, announced: make(chan struct{})}
	n.swarms[key] = s
	n.mu.Unlock()

	t.DownloadAll()
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
