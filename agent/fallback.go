package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/store"
)

// The HTTP fallback: when the tracker cannot be reached, or the swarm makes
// no progress for stall_timeout, the agent takes the blob (or the rest of
// it) from an origin over HTTP, with Range from the verified prefix it
// already holds. The client sees one uninterrupted response either way.

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
		dl, err := a.createDownload(ctx, d, resp.ContentLength)
		if err != nil || dl == nil {
			resp.Body.Close()
			return err
		}
		ready()
		err = copyInto(dl, resp.Body, 0)
		resp.Body.Close()
		if err == nil {
			err = dl.Wait(ctx)
		}
		if err != nil {
			dl.Fail(err)
		}
		dl.Release()
		return err
	}
	return fmt.Errorf("every origin failed: %w", errors.Join(errs...))
}

// fallbackResume completes dl from an origin, starting at its verified
// prefix.
func (a *Agent) fallbackResume(ctx context.Context, ns string, dl *store.Download) error {
	var errs []error
	for _, o := range a.cluster.origins.Pick(dl.Digest().String(), 0) {
		from := dl.Hashed()
		resp, err := a.originBlob(ctx, o, ns, dl.Digest(), from)
		if err != nil {
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
	return fmt.Errorf("every origin failed: %w", errors.Join(errs...))
}

// originBlob asks origin o for blob d from byte from on.
func (a *Agent) originBlob(ctx context.Context, o, ns string, d digest.Digest, from int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("%s/namespace/%s/blobs/%s", o, url.PathEscape(ns), d), nil)
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
