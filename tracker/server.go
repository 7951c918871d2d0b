// Package tracker is Shoal's tracker: a standard BitTorrent HTTP tracker
// (BEP 3, compact peers per BEP 23) over a pluggable peer store, plus the
// metainfo endpoint that asks the origin owning a digest on the hash ring
// and caches the answer.
package tracker

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/internal/hashring"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/tracker/peerstore"
)

// Server is a running tracker: its listener is bound by New.
type Server struct {
	cfg     Config
	log     *slog.Logger
	base    *httpx.Base
	srv     *httpx.Server
	handler http.Handler
	store   peerstore.Store
	metrics *metrics
	// closeStore releases a store New built (nil for one passed in).
	closeStore     func() error
	closeStoreOnce sync.Once
	storeName      string // cfg.PeerStore, or the type WithPeerStore gave

	// metainfo
	origins []string // base URLs without a trailing slash
	ring    *hashring.Ring
	client  *http.Client
	cache   *lru.Cache[string, []byte]
	flights singleflight.Group
	// announceURL goes into the torrents handed to clients (external_url).
	announceURL string
	life        context.Context // ends with Run or Close; bounds origin fetches
	stop        context.CancelFunc
}

// Option changes how New builds a Server.
type Option func(*options)

type options struct {
	store  peerstore.Store
	now    func() time.Time
	client *http.Client
}

// WithPeerStore replaces the peer store that cfg.PeerStore names. The
// caller keeps ownership: the tracker does not close it.
func WithPeerStore(s peerstore.Store) Option { return func(o *options) { o.store = s } }

// WithClock sets the clock of the peer store New builds (entry expiry).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithHTTPClient sets the client used to ask origins (for TLS settings).
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// New checks cfg (filling its defaults), builds the tracker and binds its
// listener, so Addr and URL are known before Run.
func New(cfg Config, log *slog.Logger, opts ...Option) (*Server, error) {
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tracker config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	tlsSrc, err := tlsconf.New(cfg.TLS, "tls", log)
	if err != nil {
		return nil, fmt.Errorf("tracker config: %w", err)
	}
	var closeStore func() error
	storeName := fmt.Sprintf("%T", o.store)
	if o.store == nil {
		o.store, closeStore = newStore(cfg, o.now)
		storeName = cfg.PeerStore
	}
	if o.client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		o.client = &http.Client{Transport: tlsSrc.Transport(t)}
	}
	cache, err := lru.New[string, []byte](cfg.MetainfoCacheSize)
	if err != nil {
		return nil, fmt.Errorf("tracker: metainfo cache: %w", err)
	}
	s := &Server{
		cfg:        cfg,
		log:        log,
		base:       httpx.NewBase(),
		store:      o.store,
		closeStore: closeStore,
		storeName:  storeName,
		client:     o.client,
		cache:      cache,
	}
	for _, origin := range cfg.Origins {
		s.origins = append(s.origins, strings.TrimRight(origin, "/"))
	}
	s.ring = hashring.New(s.origins)
	s.life, s.stop = context.WithCancel(context.Background())
	s.metrics = newMetrics(s.base.Metrics, s.store)
	if p, ok := s.store.(interface{ Ping(context.Context) error }); ok {
		s.base.ReadyCheck = func(ctx context.Context) error {
			err := p.Ping(ctx)
			if err != nil {
				s.metrics.storeError("ping")
			}
			return err
		}
	}
	s.handler = s.routes()
	s.srv, err = httpx.ListenTLS(cfg.Listen, s.handler, log, cfg.HTTP, tlsSrc.ServerConfig())
	if err != nil {
		s.stop()
		s.releaseStore()
		return nil, fmt.Errorf("tracker: %w", err)
	}
	if s.cfg.ExternalURL == "" { // listen asked for port 0: the bound one
		s.cfg.ExternalURL = defaultExternalURL(s.cfg.scheme(), s.srv.Addr())
	}
	s.announceURL = proto.AnnounceURL(s.cfg.ExternalURL)
	return s, nil
}

// newStore builds the peer store cfg names, and how to release it.
func newStore(cfg Config, now func() time.Time) (peerstore.Store, func() error) {
	if cfg.PeerStore == PeerStoreRedis {
		r := peerstore.NewRedis(peerstore.RedisOptions{
			Addr:        cfg.Redis.Addr,
			Password:    cfg.Redis.Password,
			DB:          cfg.Redis.DB,
			KeyPrefix:   cfg.Redis.KeyPrefix,
			DialTimeout: cfg.Redis.DialTimeout,
			OpTimeout:   cfg.Redis.OpTimeout,
			TTL:         cfg.PeerTTL,
			Now:         now,
		})
		return r, r.Close
	}
	return peerstore.NewMemory(cfg.PeerTTL, now), nil
}

// releaseStore closes the peer store if New built it.
func (s *Server) releaseStore() {
	s.closeStoreOnce.Do(func() {
		if s.closeStore != nil {
			if err := s.closeStore(); err != nil {
				s.log.Warn("close peer store", "err", err)
			}
		}
	})
}

func (s *Server) routes() http.Handler {
	r := s.base.Router(s.log)
	r.Get(proto.PatternAnnounce, s.handleAnnounce)
	r.Get(proto.PatternMetainfo, s.handleMetainfo)
	r.Head(proto.PatternMetainfo, s.handleMetainfo)
	r.Get(proto.PatternTorrent, s.handleTorrent)
	r.Head(proto.PatternTorrent, s.handleTorrent)
	return r
}

// Addr is the bound address (with the real port when port 0 was asked).
func (s *Server) Addr() string { return s.srv.Addr() }

// URL is the tracker's base URL; the announce URL is URL()+"/announce".
func (s *Server) URL() string { return s.srv.URL() }

// AnnounceURL is the announce URL written into the torrents the tracker
// hands out: external_url + "/announce".
func (s *Server) AnnounceURL() string { return s.announceURL }

// Handler is the tracker's HTTP handler (for tests and benchmarks).
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	attrs := []any{"addr", s.Addr(), "origins", len(s.origins),
		"announce_interval", s.cfg.AnnounceInterval, "peer_ttl", s.cfg.PeerTTL}
	if s.storeName == PeerStoreRedis { // never the password
		attrs = append(attrs, "peer_store", s.storeName, "redis_addr", s.cfg.Redis.Addr,
			"redis_db", s.cfg.Redis.DB, "redis_key_prefix", s.cfg.Redis.KeyPrefix)
	} else {
		attrs = append(attrs, "peer_store", s.storeName)
	}
	s.log.Info("tracker serving", attrs...)
	s.base.SetReady(true)
	defer s.releaseStore()
	defer s.base.SetReady(false)
	defer s.stop()
	return s.srv.Serve(ctx)
}

// Close releases the listener of a Server that will not Run, or stops a running one at once.
func (s *Server) Close() error {
	s.stop()
	err := s.srv.Close()
	s.releaseStore()
	return err
}

func (s *Server) handleAnnounce(w http.ResponseWriter, r *http.Request) {
	req, reason := parseAnnounce(r.URL.RawQuery)
	if reason != "" {
		s.metrics.announceFailure.Inc()
		s.log.Debug("bad announce", "reason", reason, "remote", r.RemoteAddr)
		writeBencode(w, failureBody(reason))
		return
	}
	ip := remoteAddr(r)
	if s.cfg.TrustIPParam && req.ip.IsValid() {
		ip = req.ip
	}
	if !ip.IsValid() {
		s.metrics.announceFailure.Inc()
		writeBencode(w, failureBody("cannot tell the peer's address; send ip"))
		return
	}
	ctx := r.Context()
	var peers []peerstore.Peer
	var complete, incomplete int
	var err error
	if req.event == "stopped" {
		err = s.store.Remove(ctx, req.infoHash, req.peerID)
		if err == nil {
			complete, incomplete, err = s.store.Counts(ctx, req.infoHash)
		}
		if err != nil {
			s.metrics.storeError("remove")
		}
	} else {
		peers, complete, incomplete, err = s.announce(ctx, req, ip)
		if err != nil {
			s.metrics.storeError("announce")
		}
	}
	if err != nil {
		s.metrics.announceError.Inc()
		s.log.Warn("announce: peer store", "info_hash", fmt.Sprintf("%x", req.infoHash), "err", err)
		writeBencode(w, failureBody("tracker peer store unavailable, retry later"))
		return
	}
	if req.event == "stopped" {
		s.metrics.announceStopped.Inc()
	} else {
		s.metrics.announceOK.Inc()
	}
	interval := int(s.cfg.AnnounceInterval / time.Second)
	writeBencode(w, announceBody(interval, complete, incomplete, peers, req.compact, req.noPeerID))
}

// announce records the peer and samples its swarm for it, leaving it out:
// one store operation (one round trip for Redis).
func (s *Server) announce(ctx context.Context, req announceRequest, ip netip.Addr) ([]peerstore.Peer, int, int, error) {
	n := s.cfg.MaxPeers
	if req.numWant >= 0 && req.numWant < n {
		n = req.numWant
	}
	ask := 0
	if n > 0 {
		ask = n + 1 // the sample may hold the peer itself
	}
	p := peerstore.Peer{ID: req.peerID, IP: ip, Port: req.port, Complete: req.left == 0}
	peers, complete, incomplete, err := peerstore.AnnounceAndPeers(ctx, s.store, req.infoHash, p, ask)
	if err != nil {
		return nil, 0, 0, err
	}
	out := peers[:0]
	for _, p := range peers {
		if p.ID != req.peerID {
			out = append(out, p)
		}
	}
	if len(out) > n {
		out = out[:n]
	}
	return out, complete, incomplete, nil
}

func writeBencode(w http.ResponseWriter, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", fmt.Sprint(len(body)))
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
