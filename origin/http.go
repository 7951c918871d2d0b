package origin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/store"
)

// params reads {ns} (path-escaped: "library%2Fubuntu") and {digest}.
func params(r *http.Request) (string, digest.Digest, error) {
	ns, err := url.PathUnescape(chi.URLParam(r, "ns"))
	if err != nil || ns == "" {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "namespace %q is not a path-escaped repository", chi.URLParam(r, "ns"))
	}
	d, err := digest.Parse(chi.URLParam(r, "digest"))
	if err == nil && d.Algorithm() != digest.SHA256 {
		err = digest.ErrDigestUnsupported
	}
	if err != nil {
		return "", "", httpx.Errorf(http.StatusBadRequest, httpx.CodeDigestInvalid, "digest %q: %v", chi.URLParam(r, "digest"), err)
	}
	return ns, d, nil
}

// handleMetainfo answers the bencoded metainfo of a blob, fetching the blob
// from upstream first if needed (the caller waits for the whole blob).
func (o *Origin) handleMetainfo(w http.ResponseWriter, r *http.Request) {
	ns, d, err := params(r)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	if _, err := o.store.Stat(d); err != nil {
		if err := o.awaitFetch(r.Context(), ns, d); err != nil {
			writeErr(w, r, err)
			return
		}
	}
	if n, err := o.store.Stat(d); err == nil && n == 0 {
		writeErr(w, r, httpx.Errorf(http.StatusNotFound, httpx.CodeBlobUnknown, "empty blob %s has no metainfo; it needs no transfer", d))
		return
	}
	mi, err := o.metaInfo(d)
	if errors.Is(err, store.ErrNotFound) {
		// The stored copy failed verification and was removed (or vanished
		// between the looks): fetch it again rather than answer 404.
		if err = o.awaitFetch(r.Context(), ns, d); err == nil {
			mi, err = o.metaInfo(d)
		}
	}
	if err != nil {
		writeErr(w, r, err)
		return
	}
	raw, err := o.store.ReadMeta(d, "torrent")
	if err != nil {
		writeErr(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-bittorrent")
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.Header().Set("X-Shoal-Info-Hash", mi.InfoHash.HexString())
	_, _ = w.Write(raw)
}

// awaitFetch joins or starts the upstream fetch of d and waits for the
// whole blob (or the request's end).
func (o *Origin) awaitFetch(ctx context.Context, ns string, d digest.Digest) error {
	f := o.startFetch(ns, d)
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleBlob serves the blob over HTTP (the agents' fallback path), with
// Range. A blob still arriving from upstream is streamed as it arrives.
func (o *Origin) handleBlob(w http.ResponseWriter, r *http.Request) {
	ns, d, err := params(r)
	if err != nil {
		writeErr(w, r, err)
		return
	}
	blob, size, err := o.store.OpenOrFollow(r.Context(), d)
	if err != nil && r.Method == http.MethodHead {
		size, err = o.headUpstream(r.Context(), ns, d)
		if err != nil {
			writeErr(w, r, err)
			return
		}
		httpx.SetBlobHeaders(w, d)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		return
	}
	if err != nil {
		f := o.startFetch(ns, d)
		select {
		case <-f.ready:
		case <-r.Context().Done():
			return
		}
		if blob, size, err = o.store.OpenOrFollow(r.Context(), d); err != nil {
			<-f.done // it failed or finished between the two looks
			if f.err != nil {
				err = f.err
			} else {
				blob, size, err = o.store.OpenOrFollow(r.Context(), d)
			}
		}
		if err != nil {
			writeErr(w, r, err)
			return
		}
	}
	defer blob.Close()
	// ServeContent would answer a bad Range with a text/plain 416; clients
	// expect OCI error JSON.
	if _, err := httpx.ParseRange(r.Header.Get("Range"), size); err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		writeErr(w, r, httpx.Errorf(http.StatusRequestedRangeNotSatisfiable, httpx.CodeRangeInvalid,
			"range %q not satisfiable for %d bytes", r.Header.Get("Range"), size))
		return
	}
	httpx.SetBlobHeaders(w, d)
	cw := &httpx.CountingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, store.Content(blob))
	o.httpBytes.Add(float64(cw.N))
}

func (o *Origin) headUpstream(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	repo, err := o.up.Resolve(ns)
	if err != nil {
		return 0, err
	}
	size, err := o.up.HeadBlob(ctx, repo, d)
	if err != nil {
		o.logUpstreamErr("upstream HEAD failed", repo, d, err)
	}
	return size, err
}

var _ store.Blob = (*store.Reader)(nil)
