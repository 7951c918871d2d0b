package tracker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
)

// maxMetainfoBytes bounds an origin's metainfo body. Piece hashes of a
// 100 GiB blob at 4 MiB pieces take 500 KiB, so this is generous.
const maxMetainfoBytes = 16 << 20

// pathParam returns a chi URL parameter unescaped. chi matches on RawPath
// when the request has one (so "%2F" stays inside {ns}), and then the
// parameter is still escaped.
func pathParam(r *http.Request, name string) (string, error) {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v, nil
	}
	return url.PathUnescape(v)
}

// fileKind is what the tracker serves of a blob, fetched from the origins:
// the live metainfo (for Shoal nodes) or the standard torrent (for any
// BitTorrent client).
type fileKind = proto.BlobFile

const (
	kindMetainfo = proto.FileMetainfo
	kindTorrent  = proto.FileTorrent
)

// blobParams reads and checks {ns} and {digest}.
func blobParams(r *http.Request) (string, digest.Digest, error) {
	ns, err := pathParam(r, "ns")
	if err != nil || len(ns) > 512 || proto.CheckNamespace(ns) != nil {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "invalid namespace %q", ns)
	}
	raw, err := pathParam(r, "digest")
	if err != nil {
		raw = chi.URLParam(r, "digest")
	}
	d, err := digest.Parse(raw)
	if err != nil {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeDigestInvalid, "invalid digest %q: %v", raw, err)
	}
	return ns, d, nil
}

func (s *Server) handleMetainfo(w http.ResponseWriter, r *http.Request) {
	s.serveBlobFile(w, r, kindMetainfo)
}

// handleTorrent answers the standard torrent of a blob that some origin
// holds complete, with this tracker's announce URL: what any BitTorrent
// client needs to download the blob from its holders.
func (s *Server) handleTorrent(w http.ResponseWriter, r *http.Request) {
	s.serveBlobFile(w, r, kindTorrent)
}

func (s *Server) serveBlobFile(w http.ResponseWriter, r *http.Request, kind fileKind) {
	ns, d, err := blobParams(r)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	body, err := s.blobFile(r.Context(), kind, ns, d)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client left; nobody reads an answer
		}
		s.log.Info(string(kind)+" failed", "namespace", ns, "digest", d, "err", err)
		httpx.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", proto.ContentTypeTorrent)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// blobFile returns the bencoded metainfo or torrent of d from the cache or,
// on a miss, from the origins. Concurrent misses for the same kind,
// namespace and digest share one origin request. The request runs on its
// own deadline (within the server's lifetime), not the first caller's, so
// one agent giving up does not fail the others.
func (s *Server) blobFile(ctx context.Context, kind fileKind, ns string, d digest.Digest) ([]byte, error) {
	counts := s.metrics.requests[kind]
	key := string(kind) + " " + d.String()
	if body, ok := s.cache.Get(key); ok {
		counts.hit.Inc()
		return body, nil
	}
	if len(s.origins) == 0 {
		counts.err.Inc()
		return nil, httpx.Errorf(http.StatusServiceUnavailable, httpx.CodeUnavailable, "tracker has no origins configured")
	}
	// The namespace is in the flight key: origins pull from the upstream
	// (and with the credentials) the namespace names, and may answer
	// differently for another one.
	ch := s.flights.DoChan(ns+"@"+key, func() (any, error) {
		if body, ok := s.cache.Get(key); ok { // a flight that just ended filled it
			return body, nil
		}
		fctx, cancel := context.WithTimeout(s.life, s.cfg.MetainfoTimeout)
		defer cancel()
		body, err := s.fetchFromOrigins(fctx, kind, ns, d)
		if err == nil && kind == kindTorrent {
			body, err = s.addAnnounce(body, d)
		}
		if err != nil {
			return nil, err
		}
		s.cache.Add(key, body)
		return body, nil
	})
	s.metrics.metainfoWaiting.Inc()
	defer s.metrics.metainfoWaiting.Dec()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			counts.err.Inc()
			return nil, res.Err
		}
		counts.miss.Inc()
		return res.Val.([]byte), nil
	}
}

// addAnnounce checks an origin's standard torrent of d and names this
// tracker in it, as clients outside the cluster reach it (external_url).
func (s *Server) addAnnounce(body []byte, d digest.Digest) ([]byte, error) {
	std, err := p2p.ParseStandard(body, d)
	if err == nil {
		body, err = std.WithAnnounce(s.announceURL)
	}
	if err != nil {
		return nil, httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "an origin answered a malformed torrent for "+d.String())
	}
	return body, nil
}

// fetchFromOrigins asks the origins in ring order for kind of d, by the
// failover rule of proto: a 4xx answer is the final word and is returned as
// an *httpx.Error with the origin's status and code; a connection error or
// 5xx moves on to the next origin. For a torrent, a 404 moves on too: the
// owner may not hold a blob that another origin does (it fetches only when
// asked for the metainfo), and any holder's torrent is the same.
func (s *Server) fetchFromOrigins(ctx context.Context, kind fileKind, ns string, d digest.Digest) ([]byte, error) {
	policy := proto.Policy{Observe: func(origin string, err error) { s.observeOrigin(origin, d, err) }}
	if kind == kindTorrent {
		policy.MoveOn = []int{http.StatusNotFound}
	}
	oc := proto.OriginClient{Client: proto.Client{HTTP: s.client}}
	body, err := proto.Failover(ctx, s.ring.Pick(d.String(), 0), policy, func(ctx context.Context, origin string) ([]byte, error) {
		return oc.BlobFile(ctx, origin, kind, ns, d, maxMetainfoBytes)
	})
	if err == nil {
		return body, nil
	}
	if e := (*httpx.Error)(nil); errors.As(err, &e) && e.Status >= 400 && e.Status < 500 {
		return nil, e // an origin's final word, or every origin's 404
	}
	if ctx.Err() != nil {
		return nil, httpx.Wrap(err, http.StatusGatewayTimeout, httpx.CodeUnavailable,
			fmt.Sprintf("origins did not answer for %s within %s", d, s.cfg.MetainfoTimeout))
	}
	code, msg := httpx.CodeUnavailable, fmt.Sprintf("no origin could serve the %s of %s", kind, d)
	for _, err := range unjoin(err) {
		// An origin that said why (its upstream refused it, sent bad bytes)
		// is more useful to the client than "unavailable".
		if e := (*httpx.Error)(nil); errors.As(err, &e) && e.Code != httpx.CodeUnknown && e.Code != httpx.CodeUnavailable {
			code, msg = e.Code, e.Message
		}
		msg += tlsconf.Cause(err)
	}
	return nil, httpx.Wrap(err, http.StatusBadGateway, code, msg)
}

// observeOrigin counts (and logs) one origin's answer.
func (s *Server) observeOrigin(origin string, d digest.Digest, err error) {
	switch e, _ := proto.AsError(err); {
	case err == nil:
		s.metrics.originOK.Inc()
	case e != nil && e.Status >= 400 && e.Status < 500:
		s.metrics.originClientError.Inc()
	default:
		s.metrics.originFailure.Inc()
		s.log.Warn("origin metainfo failed, trying the next", "origin", origin, "digest", d, "err", err)
	}
}

// unjoin lists the errors of errors.Join.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
