package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/proto"
)

// manifestTimeout bounds one upstream manifest or tag-list exchange; it is
// detached from the request that started it, since others may wait on it.
const manifestTimeout = time.Minute

// mediaTypeMeta names the metadata file that keeps a stored manifest's
// media type beside it.
const mediaTypeMeta = "mediatype"

// manifests serves manifests (by tag or digest) and tag lists through the
// origin's upstream credentials. Manifests are kept in the blob store, so
// one pulled by digest is served even when upstream is down.
type manifests struct {
	o        *Origin
	fetches  singleflight.Group // by digest: one upstream GET per manifest
	requests *prometheus.CounterVec
}

// mountManifests adds the manifest and tag-list routes to r.
func (o *Origin) mountManifests(r chi.Router) {
	m := &manifests{o: o}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_origin_upstream_manifest_requests_total",
		Help: "Manifest and tag-list requests sent upstream, by kind and result."}, []string{"kind", "result"})
	o.base.Metrics.MustRegister(m.requests)
	r.With(upstreamAuth).Get(proto.PatternManifest, m.handleManifest)
	r.With(upstreamAuth).Head(proto.PatternManifest, m.handleManifest)
	r.Get(proto.PatternOriginTags, m.handleTags)
}

// nsParam reads {ns}, path-escaped ("library%2Fubuntu").
func nsParam(r *http.Request) (string, error) {
	ns, err := url.PathUnescape(chi.URLParam(r, "ns"))
	if err != nil || ns == "" {
		return "", httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "namespace %q is not a path-escaped repository", chi.URLParam(r, "ns"))
	}
	return ns, nil
}

// parseRef splits {ref} into a sha256 digest or a tag.
func parseRef(ref string) (digest.Digest, string, error) {
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err == nil && d.Algorithm() != digest.SHA256 {
			err = digest.ErrDigestUnsupported
		}
		if err != nil {
			return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeDigestInvalid, "digest %q: %v", ref, err)
		}
		return d, "", nil
	}
	if !proto.ValidTag(ref) {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeManifestInvalid,
			"tag %q is invalid: want [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}", ref)
	}
	return "", ref, nil
}

// repo is the upstream repository the request's {ns} names.
func (m *manifests) repo(r *http.Request) (upstream.Repo, error) {
	ns, err := nsParam(r)
	if err != nil {
		return upstream.Repo{}, err
	}
	return m.o.up.Resolve(ns)
}

func (m *manifests) handleManifest(w http.ResponseWriter, r *http.Request) {
	repo, err := m.repo(r)
	if err != nil {
		writeManifestErr(w, r, err)
		return
	}
	d, tag, err := parseRef(chi.URLParam(r, "ref"))
	if err != nil {
		writeManifestErr(w, r, err)
		return
	}
	if tag != "" {
		desc, body, err := m.resolveTag(r.Context(), repo, tag)
		if err != nil {
			writeManifestErr(w, r, err)
			return
		}
		if body == nil && r.Method == http.MethodHead && desc.MediaType != "" && desc.Size >= 0 {
			setManifestHeaders(w, desc)
			return
		}
		d = desc.Digest
	}
	body, mediaType, err := m.manifest(r.Context(), repo, d)
	if err != nil {
		writeManifestErr(w, r, err)
		return
	}
	setManifestHeaders(w, upstream.Descriptor{Digest: d, MediaType: mediaType, Size: int64(len(body))})
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

func setManifestHeaders(w http.ResponseWriter, desc upstream.Descriptor) {
	h := w.Header()
	h.Set("Content-Type", desc.MediaType)
	h.Set(proto.HeaderContentDigest, desc.Digest.String())
	h.Set("Etag", `"`+desc.Digest.String()+`"`)
	h.Set("Content-Length", strconv.FormatInt(desc.Size, 10))
}

// resolveTag asks upstream which manifest tag names, with a HEAD. An
// upstream that omits Docker-Content-Digest is asked with GET; then the body
// is hashed, stored and returned too.
func (m *manifests) resolveTag(ctx context.Context, repo upstream.Repo, tag string) (upstream.Descriptor, []byte, error) {
	desc, err := m.o.up.HeadManifest(ctx, repo, tag)
	m.count("head", err)
	if err != nil {
		m.o.log.Log(ctx, levelFor(err), "upstream manifest HEAD failed", "repo", repo.String(), "tag", tag, "err", err)
		return desc, nil, err
	}
	if desc.Digest != "" {
		return desc, nil, nil
	}
	body, desc, err := m.o.up.GetManifest(ctx, repo, tag)
	m.count("get", err)
	if err != nil {
		m.o.log.Log(ctx, levelFor(err), "upstream manifest GET failed", "repo", repo.String(), "tag", tag, "err", err)
		return desc, nil, err
	}
	desc.Digest = digest.FromBytes(body)
	if err := m.store(desc.Digest, body, desc.MediaType); err != nil {
		return desc, nil, err
	}
	return desc, body, nil
}

// manifest returns manifest d and its media type: from the store, or
// fetched from upstream once however many requests ask at the same time.
func (m *manifests) manifest(ctx context.Context, repo upstream.Repo, d digest.Digest) ([]byte, string, error) {
	if body, mt, err := m.stored(d); err == nil {
		return body, mt, nil
	}
	type result struct {
		body []byte
		mt   string
	}
	ch := m.fetches.DoChan(d.String(), func() (any, error) {
		if body, mt, err := m.stored(d); err == nil {
			return result{body, mt}, nil // committed while this request looked
		}
		fctx, cancel := context.WithTimeout(upstream.WithAuthorization(m.o.ctx, upstream.Authorization(ctx)), manifestTimeout)
		defer cancel()
		body, mt, err := m.fetch(fctx, repo, d)
		return result{body, mt}, err
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, "", res.Err
		}
		v := res.Val.(result)
		return v.body, v.mt, nil
	case <-ctx.Done():
		return nil, "", ctx.Err()
	}
}

// fetch GETs manifest d from upstream, checks it against d and stores it.
func (m *manifests) fetch(ctx context.Context, repo upstream.Repo, d digest.Digest) ([]byte, string, error) {
	body, desc, err := m.o.up.GetManifest(ctx, repo, d.String())
	m.count("get", err)
	if err != nil {
		m.o.log.Log(ctx, levelFor(err), "upstream manifest GET failed", "repo", repo.String(), "digest", d, "err", err)
		return nil, "", err
	}
	if got := digest.FromBytes(body); got != d {
		m.o.log.Warn("upstream manifest does not match its digest", "repo", repo.String(), "digest", d, "got", got)
		return nil, "", fmt.Errorf("upstream %s: manifest %s: body hashes to %s: %w", repo, d, got, store.ErrDigestMismatch)
	}
	if err := m.store(d, body, desc.MediaType); err != nil {
		return nil, "", err
	}
	m.o.log.Info("fetched manifest from upstream", "repo", repo.String(), "digest", d, "media_type", desc.MediaType, "bytes", len(body))
	return body, desc.MediaType, nil
}

// store keeps a verified manifest; the media type goes first, so that a
// manifest visible in the store always has one.
func (m *manifests) store(d digest.Digest, body []byte, mediaType string) error {
	if err := m.o.store.WriteMeta(d, mediaTypeMeta, []byte(mediaType)); err != nil {
		return err
	}
	dl, err := m.o.store.Create(d, int64(len(body)))
	if errors.Is(err, store.ErrInProgress) {
		return nil // the same bytes are arriving by the blob path
	}
	if err != nil {
		return err
	}
	defer dl.Release()
	if _, err := dl.Write(body); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), manifestTimeout)
	defer cancel()
	return dl.Wait(ctx)
}

// stored reads manifest d and its media type from the store (verified
// against d the first time this process opens it).
func (m *manifests) stored(d digest.Digest) ([]byte, string, error) {
	mt, err := m.o.store.ReadMeta(d, mediaTypeMeta)
	if err != nil {
		return nil, "", err
	}
	f, err := m.o.store.Open(d)
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	body, err := io.ReadAll(io.LimitReader(f, upstream.MaxManifestSize+1))
	if err != nil {
		return nil, "", err
	}
	if len(body) > upstream.MaxManifestSize {
		return nil, "", fmt.Errorf("stored manifest %s: %w", d, upstream.ErrManifestTooLarge)
	}
	return body, string(mt), nil
}

// handleTags answers the upstream's whole tag list of the namespace.
func (m *manifests) handleTags(w http.ResponseWriter, r *http.Request) {
	repo, err := m.repo(r)
	if err != nil {
		writeTagsErr(w, r, err)
		return
	}
	tags, err := m.o.up.ListTags(r.Context(), repo)
	m.count("tags", err)
	if err != nil {
		m.o.log.Log(r.Context(), levelFor(err), "upstream tag list failed", "repo", repo.String(), "err", err)
		writeTagsErr(w, r, err)
		return
	}
	if tags == nil {
		tags = []string{}
	}
	w.Header().Set("Content-Type", proto.ContentTypeJSON)
	_ = json.NewEncoder(w).Encode(proto.TagList{Name: repo.Path, Tags: tags})
}

func (m *manifests) count(kind string, err error) {
	result := "ok"
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		result = "not_found"
	case err != nil:
		result = "error"
	}
	m.requests.WithLabelValues(kind, result).Inc()
}

func levelFor(err error) slog.Level {
	if errors.Is(err, upstream.ErrNotFound) {
		return slog.LevelInfo
	}
	return slog.LevelWarn
}

// writeManifestErr is writeErr with the manifest's own codes: an unknown
// manifest is MANIFEST_UNKNOWN (not BLOB_UNKNOWN), an oversized one 502.
func writeManifestErr(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, store.ErrNotFound):
		err = httpx.Wrap(err, http.StatusNotFound, httpx.CodeManifestUnknown, "manifest unknown to upstream")
	case errors.Is(err, upstream.ErrManifestTooLarge):
		err = httpx.Wrap(err, http.StatusBadGateway, httpx.CodeManifestInvalid,
			fmt.Sprintf("upstream manifest is larger than %d bytes", upstream.MaxManifestSize))
	}
	writeErr(w, r, err)
}

func writeTagsErr(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, upstream.ErrNotFound) {
		err = httpx.Wrap(err, http.StatusNotFound, httpx.CodeNameUnknown, "repository unknown to upstream")
	}
	writeErr(w, r, err)
}
