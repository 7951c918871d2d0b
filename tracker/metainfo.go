package tracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
)

// maxMetainfoBytes bounds an origin's metainfo body. Piece hashes of a
// 100 GiB blob at 4 MiB pieces take 500 KiB, so this is generous.
const maxMetainfoBytes = 16 << 20

const contentTypeTorrent = "application/x-bittorrent"

// namespaceRE is an OCI repository name, optionally prefixed by a registry
// host (with port) when it is not the default upstream.
var namespaceRE = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?` +
	`[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)

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

func (s *Server) handleMetainfo(w http.ResponseWriter, r *http.Request) {
	ns, err := pathParam(r, "ns")
	if err != nil || len(ns) > 512 || !namespaceRE.MatchString(ns) {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "invalid namespace %q", ns))
		return
	}
	raw, err := pathParam(r, "digest")
	if err != nil {
		raw = chi.URLParam(r, "digest")
	}
	d, err := digest.Parse(raw)
	if err != nil {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeDigestInvalid, "invalid digest %q: %v", raw, err))
		return
	}
	body, err := s.metainfo(r.Context(), ns, d)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client left; nobody reads an answer
		}
		s.log.Info("metainfo failed", "namespace", ns, "digest", d, "err", err)
		httpx.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", contentTypeTorrent)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// metainfo returns the bencoded metainfo of d from the cache or, on a miss,
// from the origins. Concurrent misses for the same namespace and digest share
// one origin request. The request runs on its own deadline (within the
// server's lifetime), not the first caller's, so one agent giving up does
// not fail the others.
func (s *Server) metainfo(ctx context.Context, ns string, d digest.Digest) ([]byte, error) {
	key := d.String()
	if body, ok := s.cache.Get(key); ok {
		s.metrics.metainfoHit.Inc()
		return body, nil
	}
	if len(s.origins) == 0 {
		s.metrics.metainfoError.Inc()
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
		body, err := s.fetchMetainfo(fctx, ns, d)
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
			s.metrics.metainfoError.Inc()
			return nil, res.Err
		}
		s.metrics.metainfoMiss.Inc()
		return res.Val.([]byte), nil
	}
}

// fetchMetainfo asks the origins in ring order for d. A 4xx answer is the
// final word and is returned as an *httpx.Error with the origin's status and
// code; a connection error or 5xx moves on to the next origin.
func (s *Server) fetchMetainfo(ctx context.Context, ns string, d digest.Digest) ([]byte, error) {
	var errs []error
	for _, origin := range s.ring.Pick(d.String(), 0) {
		body, err := s.fetchFrom(ctx, origin, ns, d)
		if err == nil {
			s.metrics.originOK.Inc()
			return body, nil
		}
		if e := (*httpx.Error)(nil); errors.As(err, &e) && e.Status >= 400 && e.Status < 500 {
			s.metrics.originClientError.Inc()
			return nil, e
		}
		s.metrics.originFailure.Inc()
		s.log.Warn("origin metainfo failed, trying the next", "origin", origin, "digest", d, "err", err)
		errs = append(errs, err)
		if ctx.Err() != nil {
			return nil, httpx.Wrap(errors.Join(errs...), http.StatusGatewayTimeout, httpx.CodeUnavailable,
				fmt.Sprintf("origins did not answer for %s within %s", d, s.cfg.MetainfoTimeout))
		}
	}
	code, msg := httpx.CodeUnavailable, fmt.Sprintf("no origin could serve metainfo for %s", d)
	for _, err := range errs {
		// An origin that said why (its upstream refused it, sent bad bytes)
		// is more useful to the client than "unavailable".
		if e := (*httpx.Error)(nil); errors.As(err, &e) && e.Code != "UNKNOWN" && e.Code != httpx.CodeUnavailable {
			code, msg = e.Code, e.Message
		}
	}
	return nil, httpx.Wrap(errors.Join(errs...), http.StatusBadGateway, code, msg)
}

func (s *Server) fetchFrom(ctx context.Context, origin, ns string, d digest.Digest) ([]byte, error) {
	u := origin + "/namespace/" + url.PathEscape(ns) + "/blobs/" + d.String() + "/metainfo"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", origin, err)
	}
	req.Header.Set("Accept", contentTypeTorrent)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", origin, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return nil, httpx.DecodeError(resp)
	default:
		// Keep the origin's OCI code (DENIED, DIGEST_INVALID...) for the answer.
		return nil, fmt.Errorf("origin %s: metainfo %s: %w", origin, d, httpx.DecodeError(resp))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetainfoBytes+1))
	if err != nil {
		return nil, fmt.Errorf("origin %s: metainfo %s: read: %w", origin, d, err)
	}
	if len(body) > maxMetainfoBytes {
		return nil, fmt.Errorf("origin %s: metainfo %s: larger than %d bytes", origin, d, maxMetainfoBytes)
	}
	// A cheap shape check: a bencoded dictionary. Agents verify the rest.
	if len(body) < 2 || body[0] != 'd' || body[len(body)-1] != 'e' {
		return nil, fmt.Errorf("origin %s: metainfo %s: not a bencoded dictionary", origin, d)
	}
	return body, nil
}
