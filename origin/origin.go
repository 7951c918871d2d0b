// Package origin is the origin role: it fetches each blob once from its
// upstream registry, streams it to every waiter while it arrives, verifies
// it, builds its metainfo and seeds it to the swarm.
package origin

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
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
	"github.com/shoal-dev/shoal/proto"
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
	seeds   *lru.Cache[digest.Digest, *seeded]

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
	up, err := upstream.New(cfg.Upstreams, cfg.DefaultUpstream, log, upstream.AllowAny(cfg.AllowAnyRegistry))
	if err != nil {
		return nil, err
	}
	o := &Origin{cfg: cfg, log: log, store: st, up: up, base: httpx.NewBase(), fetches: map[digest.Digest]*fetch{}}
	o.seeds, _ = lru.New[digest.Digest, *seeded](8192)
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
	r.Get(proto.PatternMetainfo, o.handleMetainfo)
	r.Get(proto.PatternPieces, o.handlePieces)
	r.Get(proto.PatternTorrent, o.handleTorrent)
	r.Get(proto.PatternBlob, o.handleBlob)
	r.Head(proto.PatternBlob, o.handleBlob)
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
	if sd, ok := o.seeds.Get(d); ok {
		o.seed.Drop(sd.mi.InfoHash)
		if std := sd.std.Load(); std != nil {
			o.seed.Drop(std.InfoHash)
		}
	}
	o.seeds.Remove(d)
}

// Seeding reports whether the origin seeds blob d.
func (o *Origin) Seeding(d digest.Digest) bool {
	sd, ok := o.seeds.Get(d)
	return ok && o.seed.Seeding(sd.mi.InfoHash)
}

// BytesSent counts piece bytes the origin uploaded to the swarm.
func (o *Origin) BytesSent() int64 { return o.seed.BytesSent() }

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
	return err
}

// UpstreamGets counts blob GETs sent upstream.
func (o *Origin) UpstreamGets() int64 { return o.gets.Load() }

// fetch is one upstream download, shared by every request for the digest.
type fetch struct {
	ready chan struct{} // the store download exists and seed is set (or err is)
	done  chan struct{} // committed (or err is set)
	seed  *seeded       // nil for an empty blob
	err   error
}

// seeded is a blob the origin seeds: its metainfo and its piece hashes,
// which grow while the blob arrives from upstream, and once the blob is
// complete and verified its standard torrent (standard.go).
type seeded struct {
	mi     *p2p.MetaInfo
	hashes *p2p.PieceHashes
	std    atomic.Pointer[p2p.MetaInfo]
}

func newSeeded(d digest.Digest, size, pieceLen int64, hashes *p2p.PieceHashes) (*seeded, error) {
	raw, err := p2p.BuildMetaInfo(d, size, pieceLen)
	if err != nil {
		return nil, err
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	if err != nil {
		return nil, err
	}
	if hashes == nil {
		hashes = p2p.NewPieceHashes(size, pieceLen)
	}
	return &seeded{mi: mi, hashes: hashes}, nil
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
		if sd := f.seed; sd != nil && f.err != nil {
			// Peers stop getting pieces and hashes (the last hash was never
			// published, so none can complete the blob). Before the fetch
			// is forgotten: a new one may seed the same info-hash.
			sd.hashes.Fail(f.err)
			o.seed.Drop(sd.mi.InfoHash)
			o.seeds.Remove(d)
		}
		o.mu.Lock()
		delete(o.fetches, d)
		o.mu.Unlock()
		readyOnce()
		close(f.done)
	}()
	ctx, cancel := context.WithTimeout(o.ctx, o.cfg.FetchTimeout)
	defer cancel()

	if _, err := o.store.Stat(d); err == nil {
		// Already stored (a request raced with the commit). seedStored
		// verifies a copy from an earlier run; one that no longer matches
		// its digest is removed and fetched again below.
		if _, err := o.seedStored(d); !errors.Is(err, store.ErrNotFound) {
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
	var opts []store.Option
	if size > 0 {
		// The metainfo needs only the size: publish it and seed each piece
		// as soon as it is hashed, so that the swarm runs while the blob
		// arrives (see p2p/pieces.go).
		if f.seed, err = newSeeded(d, size, o.pieceLength(size), nil); err != nil {
			f.err = err
			return
		}
		f.seed.hashes.HoldLast() // until the digest matched
		opts = append(opts, store.WithTee(f.seed.hashes))
	}
	dl, err := o.store.Create(d, size, opts...)
	if err != nil {
		o.log.Error("cannot store blob", "digest", d, "size", size, "err", err)
		f.seed, f.err = nil, httpx.DiskError(err)
		return
	}
	if sd := f.seed; sd != nil {
		// Seeds of an earlier copy that failed verification.
		o.seed.Drop(sd.mi.InfoHash)
		if old, ok := o.seeds.Peek(d); ok {
			if std := old.std.Load(); std != nil {
				o.seed.Drop(std.InfoHash)
			}
		}
		dl.Acquire()
		if err := o.seed.Seed(sd.mi, dl, sd.hashes, dl.Release); err != nil {
			dl.Release()
			dl.Fail(err)
			dl.Release()
			f.seed, f.err = nil, err
			return
		}
		o.seeds.Add(d, sd)
	}
	// The last piece's hash goes out once the whole blob matched its
	// digest, not after the store made it durable: the sync of a large
	// blob would hold up every agent's last piece.
	published := make(chan error, 1)
	if sd := f.seed; sd != nil {
		go func() {
			err := dl.WaitVerified(ctx)
			if err == nil {
				err = sd.hashes.Publish()
			}
			published <- err
		}()
	} else {
		published <- nil
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
	if perr := <-published; werr == nil {
		werr = perr
	}
	if werr != nil {
		f.err = fmt.Errorf("fetch %s from %s: %w", d, repo, werr)
		o.log.Warn("upstream fetch failed", "digest", d, "repo", repo.String(), "err", werr)
		return
	}
	o.log.Info("fetched blob from upstream", "digest", d, "repo", repo.String(), "bytes", size)
	if sd := f.seed; sd != nil {
		if err := o.keepSeeded(d, sd); err != nil {
			o.log.Warn("keep metainfo beside blob", "digest", d, "err", err)
		}
		// Before the fetch is forgotten: until then, the standard torrent
		// is answered "not complete yet".
		if err := o.seedStandard(d, sd); err != nil {
			o.log.Warn("cannot seed the standard torrent", "digest", d, "err", err)
		}
	}
}

// seeded returns the metainfo and piece hashes of d and makes sure it is
// seeded: from the store, or from the upstream fetch (started if needed) as
// soon as upstream has answered, long before the blob is in.
func (o *Origin) seeded(ctx context.Context, ns string, d digest.Digest) (*seeded, error) {
	if sd, ok := o.seeds.Get(d); ok && o.seed.Seeding(sd.mi.InfoHash) {
		return sd, nil
	}
	if _, err := o.store.Stat(d); err == nil {
		// The stored copy may fail verification and be removed (or vanish
		// between the looks): then fetch it again rather than answer 404.
		if sd, err := o.seedStored(d); !errors.Is(err, store.ErrNotFound) {
			return sd, err
		}
	}
	f := o.startFetch(ns, d)
	select {
	case <-f.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.seed != nil {
		return f.seed, nil
	}
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, f.err
	}
	return o.seedStored(d) // an empty blob, or one committed meanwhile
}

// Meta files kept beside a blob: its metainfo, and its piece hashes
// followed by their sha256 (a list that rotted on disk would make agents
// reject every piece and ban honest peers).
const (
	metaTorrent = "torrent"
	metaPieces  = "pieces"
)

func (o *Origin) keepSeeded(d digest.Digest, sd *seeded) error {
	if err := o.store.WriteMeta(d, metaTorrent, sd.mi.Raw()); err != nil {
		return err
	}
	sums := sd.hashes.Sums()
	check := sha256.Sum256(sums)
	return o.store.WriteMeta(d, metaPieces, append(slices.Clip(sums), check[:]...))
}

// seedStored seeds the stored blob d (verified first if it is from an
// earlier run) and returns its metainfo and piece hashes, read from beside
// the blob or computed again.
func (o *Origin) seedStored(d digest.Digest) (*seeded, error) {
	if sd, ok := o.seeds.Get(d); ok && o.seed.Seeding(sd.mi.InfoHash) {
		return sd, nil
	}
	file, err := o.store.Open(d)
	if err != nil {
		return nil, err
	}
	sd, err := o.loadSeeded(d, file)
	if err != nil {
		file.Close()
		return nil, err
	}
	if err := o.seed.Seed(sd.mi, file, nil, func() { file.Close() }); err != nil {
		file.Close()
		if !errors.Is(err, p2p.ErrInSwarm) {
			return nil, err
		}
	}
	o.seeds.Add(d, sd)
	if err := o.seedStandard(d, sd); err != nil {
		o.log.Warn("cannot seed the standard torrent", "digest", d, "err", err)
	}
	return sd, nil
}

func (o *Origin) loadSeeded(d digest.Digest, file *os.File) (*seeded, error) {
	fi, err := file.Stat()
	if err != nil {
		return nil, err
	}
	size := fi.Size()
	if size == 0 {
		return nil, httpx.Errorf(http.StatusNotFound, httpx.CodeBlobUnknown, "empty blob %s has no metainfo; it needs no transfer", d)
	}
	if raw, err := o.store.ReadMeta(d, metaTorrent); err == nil {
		mi, err := p2p.ParseMetaInfo(raw, d)
		kept, kerr := o.store.ReadMeta(d, metaPieces)
		if err == nil && kerr == nil && len(kept) >= sha256.Size {
			sums, check := kept[:len(kept)-sha256.Size], kept[len(kept)-sha256.Size:]
			hashes := p2p.NewPieceHashes(size, mi.Info.PieceLength)
			if sha256.Sum256(sums) == [sha256.Size]byte(check) && hashes.Add(sums) == nil && hashes.Complete() {
				return &seeded{mi: mi, hashes: hashes}, nil
			}
		}
	}
	// None kept (a blob put there by hand), or from an older version, or
	// damaged: hash the verified blob again.
	pl := o.pieceLength(size)
	hashes, err := p2p.HashesOf(io.NewSectionReader(file, 0, size), size, pl)
	if err != nil {
		return nil, fmt.Errorf("metainfo %s: %w", d, err)
	}
	sd, err := newSeeded(d, size, pl, hashes)
	if err != nil {
		return nil, err
	}
	if err := o.keepSeeded(d, sd); err != nil {
		o.log.Warn("keep metainfo beside blob", "digest", d, "err", err)
	}
	return sd, nil
}

// pieceLength is the configured piece length, or one chosen by blob size.
func (o *Origin) pieceLength(size int64) int64 {
	if o.cfg.PieceLength != 0 {
		return int64(o.cfg.PieceLength)
	}
	return p2p.PieceLengthFor(size)
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
		return unknownRegistry(err)
	case errors.Is(err, upstream.ErrUnauthorized):
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeDenied, "upstream refused the origin's credentials")
	case errors.Is(err, store.ErrDigestMismatch):
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeDigestInvalid, "upstream sent content that does not match the digest")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return httpx.Wrap(err, http.StatusGatewayTimeout, httpx.CodeUnavailable, "timed out waiting for upstream")
	}
	return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "upstream unavailable")
}
