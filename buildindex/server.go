// Package buildindex is the build-index role: it maps repo:tag to a
// manifest digest, resolving tags through the origins (which hold the
// upstream credentials), trusting a resolved tag for tag_ttl, and answering
// what it last knew when upstream cannot be reached.
package buildindex

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/buildindex/tagstore"
	"github.com/shoal-dev/shoal/internal/hashring"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
)

// maxManifestSize bounds the size a tag entry may claim (distribution's
// manifest limit).
const maxManifestSize = 4 << 20

// Server is one build-index.
type Server struct {
	cfg     Config
	log     *slog.Logger
	tags    tagstore.TagStore
	origins *hashring.Ring
	hc      *http.Client
	now     func() time.Time
	base    *httpx.Base
	srv     *httpx.Server

	preheat *preheater
	ctx     context.Context // jobs run under it until Run ends
	cancel  context.CancelFunc

	resolving   singleflight.Group // by namespace and tag
	resolutions atomic.Int64
	lookups     *prometheus.CounterVec
	resolves    *prometheus.CounterVec
}

// Option adjusts a Server.
type Option func(*Server)

// WithClock replaces time.Now (for TTL tests).
func WithClock(now func() time.Time) Option { return func(s *Server) { s.now = now } }

// WithTagStore replaces the file store under Root.
func WithTagStore(ts tagstore.TagStore) Option { return func(s *Server) { s.tags = ts } }

// New opens the tag store and binds the listener (port 0 allowed).
func New(cfg Config, log *slog.Logger, opts ...Option) (*Server, error) {
	tlsSrc, err := tlsconf.New(cfg.TLS, "tls", log)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		log:     log,
		origins: hashring.New(trimSlashes(cfg.Origins)),
		hc:      &http.Client{Transport: tlsSrc.Transport(&http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second})},
		now:     time.Now,
		base:    httpx.NewBase(),
	}
	for _, o := range opts {
		o(s)
	}
	if s.tags == nil {
		fs, err := tagstore.NewFile(cfg.Root)
		if err != nil {
			return nil, err
		}
		s.tags = fs
	}
	s.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_buildindex_tag_lookups_total",
		Help: "Tag lookups, by how they were answered (hit, resolved, stale, not_found, error)."}, []string{"result"})
	s.resolves = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_buildindex_resolutions_total",
		Help: "Tag resolutions through the origins, by result."}, []string{"result"})
	s.base.Metrics.MustRegister(s.lookups, s.resolves)

	r := s.base.Router(log)
	r.Get(proto.PatternTags, s.handleList)
	r.Get(proto.PatternTag, s.handleGet)
	r.With(httpx.RequireAdmin(s.cfg.AdminToken, s.cfg.TLS.AdminNames)).Put(proto.PatternTag, s.handlePut)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.preheat, err = newPreheater(s); err != nil {
		return nil, err
	}
	s.mountPreheat(r)
	srv, err := httpx.ListenTLS(cfg.Listen, r, log, cfg.HTTP, tlsSrc.ServerConfig())
	if err != nil {
		return nil, err
	}
	s.srv = srv
	return s, nil
}

// URL of the HTTP API.
func (s *Server) URL() string { return s.srv.URL() }

// Run serves until ctx ends, resuming unfinished preheat jobs; running
// jobs stop with it (and resume at the next start).
func (s *Server) Run(ctx context.Context) error {
	s.base.SetReady(true)
	s.preheat.resume(s.ctx)
	err := s.srv.Serve(ctx)
	s.cancel()
	s.preheat.wg.Wait()
	return err
}

// runCtx is the context preheat jobs run under.
func (s *Server) runCtx() context.Context { return s.ctx }

// Resolutions counts tag resolutions sent to the origins.
func (s *Server) Resolutions() int64 { return s.resolutions.Load() }

func trimSlashes(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = strings.TrimRight(u, "/")
	}
	return out
}

// tagInfo is the wire form of a tag's mapping (GET answer, PUT body).
type tagInfo = proto.TagInfo

func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) {
	ns, tag, err := params(r)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	e, stale, err := s.lookup(r.Context(), ns, tag)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	if stale {
		w.Header().Set(proto.HeaderStale, "true")
	}
	writeJSON(w, http.StatusOK, tagInfo{Digest: e.Digest, MediaType: e.MediaType, Size: e.Size})
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request) {
	ns, tag, err := params(r)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	var in tagInfo
	dec := json.NewDecoder(r.Body) // bounded by http.max_body_bytes
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpx.WriteError(w, r, httpx.Errorf(http.StatusRequestEntityTooLarge, httpx.CodeSizeInvalid,
				"body: more than %d bytes (http.max_body_bytes)", tooBig.Limit))
			return
		}
		httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeManifestInvalid,
			"body: want {\"digest\",\"media_type\",\"size\"}: %v", err))
		return
	}
	if err := checkTagInfo(in); err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	e := tagstore.Entry{Digest: in.Digest, MediaType: in.MediaType, Size: in.Size, ResolvedAt: s.now(), Source: tagstore.SourcePut}
	if err := s.tags.Put(r.Context(), ns, tag, e); err != nil {
		s.log.Error("store tag", "namespace", ns, "tag", tag, "err", err)
		httpx.WriteError(w, r, err)
		return
	}
	s.log.Info("tag recorded", "namespace", ns, "tag", tag, "digest", in.Digest)
	writeJSON(w, http.StatusCreated, in)
}

func checkTagInfo(in tagInfo) error {
	d, err := digest.Parse(string(in.Digest))
	if err == nil && d.Algorithm() != digest.SHA256 {
		err = digest.ErrDigestUnsupported
	}
	if err != nil {
		return httpx.Errorf(http.StatusBadRequest, httpx.CodeDigestInvalid, "digest %q: %v", in.Digest, err)
	}
	if _, _, err := mime.ParseMediaType(in.MediaType); err != nil {
		return httpx.Errorf(http.StatusBadRequest, httpx.CodeManifestInvalid, "media_type %q: %v", in.MediaType, err)
	}
	if in.Size <= 0 || in.Size > maxManifestSize {
		return httpx.Errorf(http.StatusBadRequest, httpx.CodeSizeInvalid, "size %d: want 1..%d", in.Size, maxManifestSize)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", proto.ContentTypeJSON)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// nsParam reads {ns}: path-escaped, optionally prefixed with a registry
// host ("ghcr.io%2Forg%2Fapp"), checked against the spec's grammar (it
// becomes a directory name in the tag store).
func nsParam(r *http.Request) (string, error) {
	ns, err := url.PathUnescape(chi.URLParam(r, "ns"))
	if err == nil {
		err = checkNamespace(ns)
	}
	if err != nil {
		return "", httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "namespace %q: %v", chi.URLParam(r, "ns"), err)
	}
	return ns, nil
}

// params reads {ns} and {tag}.
func params(r *http.Request) (string, string, error) {
	ns, err := nsParam(r)
	if err != nil {
		return "", "", err
	}
	tag, err := url.PathUnescape(chi.URLParam(r, "tag"))
	if err != nil || !proto.ValidTag(tag) {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeManifestInvalid,
			"tag %q is invalid: want [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", chi.URLParam(r, "tag"))
	}
	return ns, tag, nil
}

// checkNamespace checks ns against the grammar (proto.CheckNamespace); the
// whole of it becomes one directory name in the tag store, hence the limit.
func checkNamespace(ns string) error {
	if len(ns) > 255 {
		return errors.New("longer than 255 characters")
	}
	return proto.CheckNamespace(ns)
}
