package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/proto"
)

// The HTTP fallback: when the tracker cannot be reached, or the swarm makes
// no progress for stall_timeout, the agent takes the blob (or the rest of
// it) from an origin over HTTP, with Range from the verified prefix it
// already holds; if every origin fails and [[upstream]] is configured,
// straight from the upstream registry. The client sees one uninterrupted
// response either way, and the blob is verified against its digest as on
// every other path.

// fallbackNew downloads blob d from an origin into a new store download;
// ready is called once the download exists, so that waiting clients can
// follow it as it arrives.
func (a *Agent) fallbackNew(ctx context.Context, ns string, d digest.Digest, ready func()) error {
	var errs []error
	for _, o := range a.cluster.origins.Pick(d.String(), 0) {
		resp, err := a.originBlob(ctx, o, ns, d, 0)
		if err != nil {
			var he *httpx.Error
			if errors.As(err, &he) && he.Status < 500 {
				return he // the origin knows the blob does not exist
			}
			errs = append(errs, err)
			continue
		}
		defer resp.Body.Close()
		return a.downloadFrom(ctx, d, resp.ContentLength, resp.Body, ready)
	}
	err := fmt.Errorf("every origin failed: %w", errors.Join(errs...))
	if a.up == nil {
		return err
	}
	a.fallbacks.WithLabelValues("origins_down").Inc()
	a.log.Warn("every origin failed; fetching the blob from the upstream registry", "digest", d, "namespace", ns, "err", err)
	return a.upstreamNew(ctx, ns, d, ready)
}

// upstreamNew downloads blob d straight from its upstream registry.
func (a *Agent) upstreamNew(ctx context.Context, ns string, d digest.Digest, ready func()) error {
	repo, err := a.up.Resolve(ns)
	if err != nil {
		return upstreamErr(err)
	}
	body, size, err := a.up.GetBlob(ctx, repo, d)
	if err != nil {
		return upstreamErr(err)
	}
	defer body.Close()
	return a.downloadFrom(ctx, d, size, body, ready)
}

// downloadFrom writes the whole blob d, of size bytes, from body into a new
// store download; ready is called once the download exists.
func (a *Agent) downloadFrom(ctx context.Context, d digest.Digest, size int64, body io.Reader, ready func()) error {
	dl, err := a.createDownload(ctx, d, size)
	if err != nil || dl == nil {
		return err
	}
	ready()
	err = copyInto(dl, body, 0)
	if err == nil {
		err = dl.Wait(ctx)
	}
	if err != nil {
		dl.Fail(err)
	}
	dl.Release()
	return err
}

// upstreamErr is what the client sees when the last resort failed too.
func upstreamErr(err error) error {
	switch {
	case errors.Is(err, upstream.ErrNotFound):
		return httpx.Wrap(err, http.StatusNotFound, httpx.CodeBlobUnknown, "blob unknown to the upstream registry (every origin is down)")
	case errors.Is(err, upstream.ErrUnauthorized):
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeDenied, "the upstream registry refused the agent's credentials (every origin is down)")
	case errors.Is(err, upstream.ErrUnknownRegistry):
		// Still an outage (5xx): the origins, had they answered, may well
		// mirror the registry; only the agent's last resort does not.
		var ue *upstream.UnknownRegistryError
		host := ""
		if errors.As(err, &ue) {
			host = ue.Host
		}
		return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, fmt.Sprintf(
			"every origin failed, and the agent's [[upstream]] (its last resort) has no entry for registry %q", host))
	case errors.Is(err, upstream.ErrInvalidName):
		return httpx.Wrap(err, http.StatusBadRequest, httpx.CodeNameInvalid, "invalid repository name")
	}
	return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "every origin and the upstream registry failed")
}

// fallbackResume completes dl from an origin, starting at its verified
// prefix.
func (a *Agent) fallbackResume(ctx context.Context, ns string, dl *store.Download) error {
	var errs []error
	for _, o := range a.cluster.origins.Pick(dl.Digest().String(), 0) {
		from := dl.Hashed()
		resp, err := a.originBlob(ctx, o, ns, dl.Digest(), from)
		if err != nil {
			var he *httpx.Error
			if errors.As(err, &he) && he.Status < 500 {
				return he // a final answer (a registry the origins refuse), not an outage
			}
			errs = append(errs, err)
			continue
		}
		err = copyInto(dl, resp.Body, from)
		resp.Body.Close()
		if err == nil {
			return dl.Wait(ctx)
		}
		if dl.Err() != nil {
			return dl.Err() // the bytes were wrong: do not try to patch them
		}
		errs = append(errs, err)
	}
	err := fmt.Errorf("every origin failed: %w", errors.Join(errs...))
	if a.up == nil {
		return err
	}
	a.fallbacks.WithLabelValues("origins_down").Inc()
	a.log.Warn("every origin failed; fetching the rest from the upstream registry", "digest", dl.Digest(),
		"verified_bytes", dl.Hashed(), "err", err)
	return a.upstreamResume(ctx, ns, dl)
}

// upstreamResume completes dl from the upstream registry, from its verified
// prefix on.
func (a *Agent) upstreamResume(ctx context.Context, ns string, dl *store.Download) error {
	repo, err := a.up.Resolve(ns)
	if err != nil {
		return upstreamErr(err)
	}
	body, off, err := a.up.GetBlobFrom(ctx, repo, dl.Digest(), dl.Hashed())
	if err != nil {
		return upstreamErr(err)
	}
	defer body.Close()
	if err := copyInto(dl, body, off); err != nil {
		return err
	}
	return dl.Wait(ctx)
}

// originBlob asks origin o for blob d from byte from on.
func (a *Agent) originBlob(ctx context.Context, o, ns string, d digest.Digest, from int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		proto.BlobURL(o, ns, d), nil)
	if err != nil {
		return nil, err
	}
	if from > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(from, 10)+"-")
	}
	resp, err := a.fallbackClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("origin %s: %w", o, err)
	}
	want := http.StatusOK
	if from > 0 {
		want = http.StatusPartialContent
	}
	if resp.StatusCode != want {
		defer resp.Body.Close()
		return nil, httpx.DecodeError(resp)
	}
	if from == 0 && resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, fmt.Errorf("origin %s: blob %s: no Content-Length", o, d)
	}
	return resp, nil
}

// originHead asks origin o for the size of blob d (a HEAD, which does not
// start a download there either).
func (a *Agent) originHead(ctx context.Context, o, ns string, d digest.Digest) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead,
		proto.BlobURL(o, ns, d), nil)
	if err != nil {
		return 0, err
	}
	resp, err := a.fallbackClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("origin %s: %w", o, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode != http.StatusOK:
		return 0, httpx.DecodeError(resp)
	case resp.ContentLength < 0:
		return 0, fmt.Errorf("origin %s: HEAD blob %s: no Content-Length", o, d)
	}
	return resp.ContentLength, nil
}

// copyInto appends r, which starts at offset off of the blob, to dl.
func copyInto(dl *store.Download, r io.Reader, off int64) error {
	buf := make([]byte, 256<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if aerr := dl.Append(off, buf[:n]); aerr != nil {
				return aerr
			}
			off += int64(n)
		}
		if err == io.EOF {
			if off != dl.Size() {
				return fmt.Errorf("origin sent %d of %d bytes", off, dl.Size())
			}
			return nil
		}
		if err != nil {
			return err
		}
	}
}
