// Package origin is the origin role: it fetches each blob once from its
// upstream registry, streams it to every waiter while it arrives, verifies
// it, builds its metainfo and seeds it to the swarm.
package origin

import (
	"context"
	"log/slog"
	"sync/atomic"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/inflight"
	"github.com/shoal-dev/shoal/internal/p2p/superseed"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/proto"
)

// Origin is one origin node.
type Origin struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store
	up    *upstream.Client
	seed  *superseed.Seeder
	base  *httpx.Base
	srv   *httpx.Server

	ctx    context.Context // lives as long as Run; fetches outlive requests
	cancel context.CancelFunc

	fetches inflight.Group[digest.Digest, *seeded] // upstream fetches (fetch.go)
	seeds   *lru.Cache[digest.Digest, *seeded]     // blobs seeded (seeding.go)

	gets          atomic.Int64
	upstreamGets  *prometheus.CounterVec
	upstreamBytes prometheus.Counter
	httpBytes     prometheus.Counter
	httpSent      atomic.Int64 // httpBytes, readable without a scrape
}

// New opens the store, starts the P2P node and binds the HTTP listener.
func New(cfg Config, log *slog.Logger) (*Origin, error) {
	st, err := store.Open(cfg.Root, log)
	if err != nil {
		return nil, config.Errorf("root", "%v", err)
	}
	tlsSrc, err := tlsconf.New(cfg.TLS, "tls", log)
	if err != nil {
		return nil, err
	}
	cfg.P2P.TLS = tlsSrc // announces to https trackers
	up, err := upstream.New(cfg.Upstreams, cfg.DefaultUpstream, log, upstream.AllowAny(cfg.AllowAnyRegistry))
	if err != nil {
		return nil, err
	}
	o := &Origin{cfg: cfg, log: log, store: st, up: up, base: httpx.NewBase()}
	o.seeds, _ = lru.New[digest.Digest, *seeded](8192)
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.upstreamGets = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_origin_upstream_requests_total",
		Help: "Blob GETs sent upstream, by result."}, []string{"result"})
	o.upstreamBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_origin_upstream_bytes_total", Help: "Blob bytes read from upstream."})
	o.httpBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_origin_http_blob_bytes_total", Help: "Blob bytes served over HTTP (fallback path)."})
	o.base.Metrics.MustRegister(o.upstreamGets, o.upstreamBytes, o.httpBytes)
	o.base.Metrics.MustRegister(st.Collectors("shoal_origin")...)
	st.SetGC(cfg.CacheConfig.GC(o.evicted))

	o.seed, err = superseed.NewSeeder(cfg.P2P, log, o.base.Metrics)
	if err != nil {
		return nil, err
	}
	r := o.base.Router(log)
	r.Get(proto.PatternMetainfo, o.handleMetainfo)
	r.Get(proto.PatternPieces, o.handlePieces)
	r.Get(proto.PatternTorrent, o.handleTorrent)
	r.Get(proto.PatternBlob, o.handleBlob)
	r.Head(proto.PatternBlob, o.handleBlob)
	r.Post(proto.PatternOriginPreheat, o.handlePreheat)
	o.mountManifests(r)
	o.srv, err = httpx.ListenTLS(cfg.Listen, r, log, cfg.HTTP, tlsSrc.ServerConfig())
	if err != nil {
		o.seed.Close()
		return nil, err
	}
	return o, nil
}

// URL of the HTTP API.
func (o *Origin) URL() string { return o.srv.URL() }

// Seeder is the origin's BitTorrent seeder.
func (o *Origin) Seeder() *superseed.Seeder { return o.seed }

// BytesSent counts piece bytes the origin uploaded to the swarm.
func (o *Origin) BytesSent() int64 { return o.seed.BytesSent() }

// PiecesLost counts pieces handed out again because the only peer known to
// hold them left before passing them on.
func (o *Origin) PiecesLost() int64 { return o.seed.PiecesLost() }

// BytesSentHTTP counts blob bytes served over HTTP (agents' fallback).
func (o *Origin) BytesSentHTTP() int64 { return o.httpSent.Load() }

// Store is the origin's blob store.
func (o *Origin) Store() *store.Store { return o.store }

// Run serves until ctx ends, then leaves every swarm.
func (o *Origin) Run(ctx context.Context) error {
	o.base.SetReady(true)
	go o.store.RunGC(o.ctx, store.DefaultGCInterval)
	// Leave the swarms as soon as asked to stop, while HTTP requests drain:
	// a stopping origin must not go on uploading pieces for the grace period.
	left := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { o.seed.Close(); close(left) })
	err := o.srv.Serve(ctx)
	o.cancel()
	if stop() {
		o.seed.Close() // Serve failed on its own
	} else {
		<-left
	}
	// A fetch that sent its last byte may still be committing the blob.
	o.fetches.Wait()
	return err
}

// UpstreamGets counts blob GETs sent upstream.
func (o *Origin) UpstreamGets() int64 { return o.gets.Load() }
