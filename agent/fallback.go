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
//
// The seam: a blobSource is one place the bytes can come from (an origin,
// the upstream registry). fetchRest is the one loop over them, the origins
// in ring order and then the upstream, each asked from where the store
// download's verified prefix ends (0 for a new download): it is the only
// code that decides which source is next, what is final (a 4xx answer,
// wrong bytes) and what is an outage (5xx, transport errors, a body that
// breaks off). The swarm side has its seams in seams.go.

// blobSource is one place the fallback can take a blob's bytes from.
type blobSource interface {
	// Blob returns blob d of namespace ns from byte from on. An error that
	// is an *httpx.Error with a 4xx status is the source's final answer
	// (the blob is unknown, the registry is refused); any other error is
	// an outage.
	Blob(ctx context.Context, ns string, d digest.Digest, from int64) (*blobBody, error)
	// Name identifies the source in errors and logs.
	Name() string
}

// blobBody is a source's answer: the blob's bytes from Off on.
type blobBody struct {
	io.ReadCloser
	// Off is where the body starts in the blob: the from asked for, or 0
	// when a source ignored the Range.
	Off int64
	// Size is the whole blob's size; known when from was 0, else -1.
	Size int64
}

// originSource is one origin's HTTP blob endpoint.
type originSource struct {
	a   *Agent
	url string
}

func (o originSource) Name() string { return o.url }

func (o originSource) Blob(ctx context.Context, ns string, d digest.Digest, from int64) (*blobBody, error) {
	resp, err := o.a.originBlob(ctx, o.url, ns, d, from)
	if err != nil {
		return nil, err
	}
	size := int64(-1)
	if from == 0 {
		size = resp.ContentLength
	}
	return &blobBody{ReadCloser: resp.Body, Off: from, Size: size}, nil
}

// originSources are the origins of d in ring order: the one that owns d
// first.
func (a *Agent) originSources(d digest.Digest) []blobSource {
	var srcs []blobSource
	for _, o := range a.cluster.origins.Pick(d.String(), 0) {
		srcs = append(srcs, originSource{a: a, url: o})
	}
	return srcs
}

// upstreamSource is the upstream registry, the agent's last resort. Its
// errors are already what the client should see (upstreamErr).
type upstreamSource struct{ up *upstream.Client }

func (u upstreamSource) Name() string { return "upstream registry" }

func (u upstreamSource) Blob(ctx context.Context, ns string, d digest.Digest, from int64) (*blobBody, error) {
	repo, err := u.up.Resolve(ns)
	if err != nil {
		return nil, upstreamErr(err)
	}
	if from == 0 {
		body, size, err := u.up.GetBlob(ctx, repo, d)
		if err != nil {
			return nil, upstreamErr(err)
		}
		return &blobBody{ReadCloser: body, Size: size}, nil
	}
	body, off, err := u.up.GetBlobFrom(ctx, repo, d, from)
	if err != nil {
		return nil, upstreamErr(err)
	}
	return &blobBody{ReadCloser: body, Off: off, Size: -1}, nil
}

// fetchRest completes blob d over HTTP: dl from its verified prefix on, or,
// with dl nil, a new download, created from the first answer's size and
// handed to ready (then fetchRest owns it: it fails and releases it). The
// origins are tried in ring order; a 4xx answer is final, wrong bytes fail
// the download (never patched from another source), anything else moves
// to the next origin from the prefix verified so far; when every origin
// failed, the upstream registry, if configured, is the last resort.
func (a *Agent) fetchRest(ctx context.Context, ns string, d digest.Digest, dl *store.Download, ready func()) (err error) {
	created := false
	defer func() {
		if created {
			if err != nil {
				dl.Fail(err)
			}
			dl.Release()
		}
	}()
	// fetch takes what src has from dl's verified prefix on; final reports
	// that no other source can do better.
	fetch := func(src blobSource) (final bool, err error) {
		from := int64(0)
		if dl != nil {
			from = dl.Hashed()
		}
		body, err := src.Blob(ctx, ns, d, from)
		if err != nil {
			var he *httpx.Error
			return errors.As(err, &he) && he.Status < 500, err
		}
		defer body.Close()
		if dl == nil {
			if dl, err = a.createDownload(ctx, d, body.Size); err != nil || dl == nil {
				return true, err // nil: another download committed it meanwhile
			}
			created = true
			ready()
		}
		if err := copyInto(dl, body, body.Off); err != nil {
			if dl.Err() != nil {
				return true, err // the bytes were wrong: do not try to patch them
			}
			return false, fmt.Errorf("%s: blob %s: %w", src.Name(), d, err)
		}
		return true, dl.Wait(ctx)
	}
	var errs []error
	for _, src := range a.originSources(d) {
		final, err := fetch(src)
		if final {
			if err != nil && dl != nil && dl.Err() != nil {
				return dl.Err()
			}
			return err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			return ctx.Err() // every client left: not an outage of the origins
		}
	}
	err = fmt.Errorf("every origin failed: %w", errors.Join(errs...))
	if a.up == nil {
		return err
	}
	a.fallbacks.WithLabelValues("origins_down").Inc()
	if dl == nil {
		a.log.Warn("every origin failed; fetching the blob from the upstream registry", "digest", d, "namespace", ns, "err", err)
	} else {
		a.log.Warn("every origin failed; fetching the rest from the upstream registry", "digest", d,
			"verified_bytes", dl.Hashed(), "err", err)
	}
	_, err = fetch(upstreamSource{a.up})
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
