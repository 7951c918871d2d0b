// Package origin is the origin role: it fetches each blob once from its
// upstream registry, streams it to every waiter while it arrives, verifies
// it, builds its metainfo and seeds it to the swarm.
package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/upstream"
)

// Origin is one origin node.
type Origin struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store
	up    *upstream.Client
	seed  *p2p.Seeder
	base  *httpx.Base
	srv   *httpx.Server

	ctx    context.Context // lives as long as Run; fetches outlive requests
	cancel context.CancelFunc

	mu      sync.Mutex
	fetches map[digest.Digest]*fetch
	metas   *lru.Cache[digest.Digest, *p2p.MetaInfo]

	gets          atomic.Int64
	upstreamGets  *prometheus.CounterVec
	upstreamBytes prometheus.Counter
	httpBytes     prometheus.Counter
}

// New opens the store, starts the P2P node and binds the HTTP listener.
func New(cfg Config, log *slog.Logger) (*Origin, error) {
	st, err := store.Open(cfg.Root, log)
	if err != nil {
		return nil, config.Errorf("root", "%v", err)
	}
	up, err := upstream.New(cfg.Upstreams, cfg.DefaultUpstream, log)
	if err != nil {
		return nil, err
	}
	o := &Origin{cfg: cfg, log: log, store: st, up: up, base: httpx.NewBase(), fetches: map[digest.Digest]*fetch{}}
	o.metas, _ = lru.New[digest.Digest, *p2p.MetaInfo](8192)
	o.ctx, o.cancel = context.WithCancel(context.Background())
	o.upstreamGets = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_origin_upstream_requests_total",
		Help: "Blob GETs sent upstream, by result."}, []string{"result"})
	o.upstreamBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_origin_upstream_bytes_total", Help: "Blob bytes read from upstream."})
	o.httpBytes = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_origin_http_blob_bytes_total", Help: "Blob bytes served over HTTP (fallback path)."})
	o.base.Metrics.MustRegister(o.upstreamGets, o.upstreamBytes, o.httpBytes)
	o.base.Metrics.MustRegister(st.Collectors("shoal_origin")...)
	st.SetGC(cfg.CacheConfig.GC(o.evicted))

	o.seed, err = p2p.NewSeeder(cfg.P2P, log, o.base.Metrics)
	if err != nil {
		return nil, err
	}
	r := chi.NewRouter()
	r.Use(httpx.LogRequests(log))
	o.base.Mount(r)
	r.Get("/namespace/{ns}/blobs/{digest}/metainfo", o.handleMetainfo)
	r.Get("/namespace/{ns}/blobs/{digest}", o.handleBlob)
	r.Head("/namespace/{ns}/blobs/{digest}", o.handleBlob)
	o.mountManifests(r)
	o.srv, err = httpx.Listen(cfg.Listen, r, log, cfg.HTTP)
	if err != nil {
		o.seed.Close()
		return nil, err
	}
	return o, nil
}

// URL of the HTTP API.
func (o *Origin) URL() string { return o.srv.URL() }

// Seeder is the origin's BitTorrent seeder.
func (o *Origin) Seeder() *p2p.Seeder { return o.seed }

// evicted stops seeding a blob the store's GC removed, which closes its file
// (and frees its disk space).
func (o *Origin) evicted(d digest.Digest) {
	if mi, ok := o.metas.Get(d); ok {
		o.seed.Drop(mi.InfoHash)
	}
	o.metas.Remove(d)
}

// Seeding reports whether the origin seeds blob d.
func (o *Origin) Seeding(d digest.Digest) bool {
	mi, ok := o.metas.Get(d)
	return ok && o.seed.Seeding(mi.InfoHash)
}

// BytesSent counts piece bytes the origin uploaded to the swarm.
func (o *Origin) BytesSent() int64 { return o.seed.BytesSent() }

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
	return err
}

// UpstreamGets counts blob GETs sent upstream.
func (o *Origin) UpstreamGets() int64 { return o.gets.Load() }

// fetch is one upstream download, shared by every request for the digest.
type fetch struct {
	ready chan struct{} // the store download exists (or err is set)
	done  chan struct{} // committed, metainfo built and seeding (or err is set)
	err   error
}

// startFetch joins or starts the upstream fetch of d.
func (o *Origin) startFetch(ns string, d digest.Digest) *fetch {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f, ok := o.fetches[d]; ok {
		return f
	}
	f := &fetch{ready: make(chan struct{}), done: make(chan struct{})}
	o.fetches[d] = f
	go o.runFetch(ns, d, f)
	return f
}

func (o *Origin) runFetch(ns string, d digest.Digest, f *fetch) {
	readyOnce := sync.OnceFunc(func() { close(f.ready) })
	defer func() {
		o.mu.Lock()
		delete(o.fetches, d)
		o.mu.Unlock()
		readyOnce()
		close(f.done)
	}()
	ctx, cancel := context.WithTimeout(o.ctx, o.cfg.FetchTimeout)
	defer cancel()

	if _, err := o.store.Stat(d); err == nil {
		// Already stored (a request raced with the commit). metaInfo
		// verifies a copy from an earlier run; one that no longer matches
		// its digest is removed and fetched again below.
		if _, err := o.metaInfo(d); !errors.Is(err, store.ErrNotFound) {
			f.err = err
			return
		}
		o.log.Warn("stored blob failed verification; fetching it again", "digest", d)
	}
	repo, err := o.up.Resolve(ns)
	if err != nil {
		f.err = err
		return
	}
	o.gets.Add(1)
	body, size, err := o.up.GetBlob(ctx, repo, d)
	if err != nil {
		o.upstreamGets.WithLabelValues("error").Inc()
		o.logUpstreamErr("upstream fetch failed", repo, d, err)
		f.err = err
		return
	}
	defer body.Close()
	o.upstreamGets.WithLabelValues("ok").Inc()
	pl := o.pieceLength(size)
	ph := p2p.NewPieceHasher(pl)
	dl, err := o.store.Create(d, size, store.WithTee(ph))
	if err != nil {
		o.log.Error("cannot store blob", "digest", d, "size", size, "err", err)
		f.err = httpx.DiskError(err)
		return
	}
	readyOnce()
	n, err := io.Copy(dl, &countingReader{body, o.upstreamBytes})
	if err == nil && n != size {
		err = fmt.Errorf("upstream %s: blob %s: got %d of %d bytes", repo, d, n, size)
	}
	if err != nil {
		dl.Fail(err)
	}
	werr := dl.Wait(ctx)
	dl.Release()
	if werr != nil {
		f.err = fmt.Errorf("fetch %s from %s: %w", d, repo, werr)
		o.log.Warn("upstream fetch failed", "digest", d, "repo", repo.String(), "err", werr)
		return
	}
	o.log.Info("fetched blob from upstream", "digest", d, "repo", repo.String(), "bytes", size)
	if size == 0 {
		return // nothing to seed
	}
	mib, err := p2p.BuildMetaInfo(d, size, pl, ph.Sums())
	if err == nil {
		err = o.store.WriteMeta(d, "torrent", mib)
	}
	if err != nil {
		f.err = err
		return
	}
	_, f.err = o.metaInfo(d)
}

// metaInfo returns the metainfo of the stored blob d, building it if the
// blob came from an earlier run, and makes sure the blob is being seeded.
func (o *Origin) metaInfo(d digest.Digest) (*p2p.MetaInfo, error) {
	if mi, ok := o.metas.Get(d); ok && o.seed.Seeding(mi.InfoHash) {
		return mi, nil
	}
	file, err := o.store.Open(d)
	if err != nil {
		return nil, err
	}
	raw, err := o.store.ReadMeta(d, "torrent")
	if errors.Is(err, store.ErrNotFound) {
		raw, err = o.buildMeta(d, file)
	}
	if err != nil {
		file.Close()
		return nil, err
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	if err != nil {
		file.Close()
		return nil, err
	}
	if err := o.seed.Seed(mi, file, func() { file.Close() }); err != nil {
		file.Close()
		if !errors.Is(err, p2p.ErrInSwarm) {
			return nil, err
		}
	}
	o.metas.Add(d, mi)
	return mi, nil
}

// pieceLength is the configured piece length, or one chosen by blob size.
func (o *Origin) pieceLength(size int64) int64 {
	if o.cfg.PieceLength != 0 {
		return int64(o.cfg.PieceLength)
	}
	return p2p.PieceLengthFor(size)
}

func (o *Origin) buildMeta(d digest.Digest, r io.ReadSeeker) ([]byte, error) {
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	pl := o.pieceLength(size)
	ph := p2p.NewPieceHasher(pl)
	n, err := io.Copy(ph, r)
	if err != nil {
		return nil, fmt.Errorf("metainfo %s: %w", d, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	raw, err := p2p.BuildMetaInfo(d, n, pl, ph.Sums())
	if err != nil {
		return nil, err
	}
	return raw, o.store.WriteMeta(d, "torrent", raw)
}

// logUpstreamErr records why upstream failed: clients get only an OCI code,
// so the cause (refused credentials, unreachable host) must be in the log.
func (o *Origin) logUpstreamErr(msg string, repo upstream.Repo, d digest.Digest, err error) {
	lvl := slog.LevelWarn
	if errors.Is(err, upstream.ErrNotFound) {
		lvl = slog.LevelInfo
	}
	o.log.Log(context.Background(), lvl, msg, "digest", d, "repo", repo.String(), "err", err)
}

type countingReader struct {
	r io.Reader
	c prometheus.Counter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.c.Add(float64(n))
	return n, err
}

// writeErr maps fetch errors onto OCI errors.
func writeErr(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, ociError(err))
}

func ociError(err error) error {
	var he *httpx.Error
	switch {
	case errors.As(err, &he):
		return he
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, store.ErrNotFound):
		return httpx.Wrap(err, http.StatusNotFound, httpx.CodeBlobUnknown, "blob unknown to upstream")
	case errors.Is(err, upstream.ErrInvalidName):
		return httpx.Wrap(err, http.StatusBadRequest, httpx.CodeNameInvalid, "invalid repository name")
	case errors.Is(err, upstream.ErrUnknownRegistry):
		return httpx.Wrap(err, http.StatusNotFound, httpx.CodeNameUnknown, "registry not configured on this origin")
	case errors.Is(err, upstream.ErrUnauthorized):
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeDenied, "upstream refused the origin's credentials")
	case errors.Is(err, store.ErrDigestMismatch):
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeDigestInvalid, "upstream sent content that does not match the digest")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return httpx.Wrap(err, http.StatusGatewayTimeout, httpx.CodeUnavailable, "timed out waiting for upstream")
	}
	return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "upstream unavailable")
}
