package origin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/inflight"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/upstream"
)

// A fetch is one upstream download of a blob, shared by every request for
// its digest (o.fetches). It is ready once the store download exists and,
// for a non-empty blob, is seeded: its value is then the blob's metainfo
// and growing piece hashes (nil for an empty blob, or a failed fetch).
type fetch = inflight.Job[*seeded]

// startFetch joins or starts the upstream fetch of d. The fetch outlives
// the request that started it (it runs under o.ctx).
func (o *Origin) startFetch(ns string, d digest.Digest) *fetch {
	return o.startFetchAuth(ns, d, "")
}

// startFetchAuth is startFetch with an upstream Authorization value for
// the fetch it starts ("" = the configured credentials). A fetch of d that
// already runs is joined as it is.
func (o *Origin) startFetchAuth(ns string, d digest.Digest, auth string) *fetch {
	f, _ := o.fetches.Do(d, func(f *fetch) error { return o.runFetch(ns, d, auth, f) })
	return f
}

// waitFor blocks until ch is closed (nil) or ctx ends (its error): how a
// request waits for a fetch to be ready or done without outliving its client.
func waitFor(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// runFetch gets d from upstream into the store, seeding it while it
// arrives, and readies f as soon as peers can start.
func (o *Origin) runFetch(ns string, d digest.Digest, auth string, f *fetch) (err error) {
	var sd *seeded // the blob's seed, once started
	defer func() {
		if sd != nil && err != nil {
			o.unseedFailed(d, sd, err)
		}
	}()
	ctx, cancel := context.WithTimeout(upstream.WithAuthorization(o.ctx, auth), o.cfg.FetchTimeout)
	defer cancel()

	if stored, err := o.seedIfStored(d); stored {
		return err
	}
	src, err := o.getUpstream(ctx, ns, d)
	if err != nil {
		return err
	}
	defer src.body.Close()
	dl, sd, err := o.createDownload(d, src.size)
	if err != nil {
		return err
	}
	published := publishWhenVerified(ctx, dl, sd)
	f.SetReady(sd)
	if err := o.receive(ctx, dl, src, published); err != nil {
		o.log.Warn("upstream fetch failed", "digest", d, "repo", src.repo.String(), "err", err)
		return fmt.Errorf("fetch %s from %s: %w", d, src.repo, err)
	}
	o.log.Info("fetched blob from upstream", "digest", d, "repo", src.repo.String(), "bytes", src.size)
	if sd != nil {
		o.seedFetched(d, sd)
	}
	return nil
}

// seedIfStored seeds d if it is already stored (a request raced with the
// commit), and reports whether it was. seedStored verifies a copy from an
// earlier run; one that no longer matches its digest is removed, and d is
// then reported as not stored, to be fetched again.
func (o *Origin) seedIfStored(d digest.Digest) (bool, error) {
	if _, err := o.store.Stat(d); err != nil {
		return false, nil
	}
	if _, err := o.seedStored(d); !errors.Is(err, store.ErrNotFound) {
		return true, err
	}
	o.log.Warn("stored blob failed verification; fetching it again", "digest", d)
	return false, nil
}

// upstreamBlob is upstream's answer to a blob GET.
type upstreamBlob struct {
	repo upstream.Repo
	d    digest.Digest
	body io.ReadCloser
	size int64
}

// getUpstream sends the blob GET upstream, counting it.
func (o *Origin) getUpstream(ctx context.Context, ns string, d digest.Digest) (*upstreamBlob, error) {
	repo, err := o.up.Resolve(ns)
	if err != nil {
		return nil, err
	}
	o.gets.Add(1)
	body, size, err := o.up.GetBlob(ctx, repo, d)
	if err != nil {
		o.upstreamGets.WithLabelValues("error").Inc()
		o.logUpstreamErr("upstream fetch failed", repo, d, err)
		return nil, err
	}
	o.upstreamGets.WithLabelValues("ok").Inc()
	return &upstreamBlob{repo: repo, d: d, body: body, size: size}, nil
}

// createDownload makes the store download of d and, unless the blob is
// empty, seeds it at once: the metainfo needs only the size, so the swarm
// runs while the blob arrives, each piece seeded as soon as it is hashed
// (see p2p/pieces.go). sd is nil for an empty blob.
func (o *Origin) createDownload(d digest.Digest, size int64) (dl *store.Download, sd *seeded, err error) {
	var opts []store.Option
	if size > 0 {
		if sd, err = newSeeded(d, size, o.pieceLength(size), nil); err != nil {
			return nil, nil, err
		}
		sd.hashes.HoldLast() // until the digest matched
		sd.chain.HoldLast()
		// The chain is the blob's sha256 taken piece by piece: the store
		// checks the digest with it rather than hash every byte again.
		opts = append(opts, store.WithHash(chainHash{sd.chain}), store.WithTee(sd.hashes))
	}
	if dl, err = o.store.Create(d, size, opts...); err != nil {
		o.log.Error("cannot store blob", "digest", d, "size", size, "err", err)
		return nil, nil, httpx.DiskError(err)
	}
	if sd != nil {
		if err := o.seedDownload(d, sd, dl); err != nil {
			return nil, nil, err
		}
	}
	return dl, sd, nil
}

// publishWhenVerified releases the last piece's hash once the whole blob
// matched its digest, not after the store made it durable: the sync of a
// large blob would hold up every agent's last piece. The channel gets the
// outcome (nil at once for an empty blob).
func publishWhenVerified(ctx context.Context, dl *store.Download, sd *seeded) <-chan error {
	published := make(chan error, 1)
	if sd == nil {
		published <- nil
		return published
	}
	go func() {
		err := dl.WaitVerified(ctx)
		if err == nil {
			err = errors.Join(sd.hashes.Publish(), sd.chain.Publish())
		}
		published <- err
	}()
	return published
}

// receive copies src into dl, waits until the blob is committed and its
// last hash published, and releases dl.
func (o *Origin) receive(ctx context.Context, dl *store.Download, src *upstreamBlob, published <-chan error) error {
	n, err := io.Copy(dl, &countingReader{src.body, o.upstreamBytes})
	if err == nil && n != src.size {
		err = fmt.Errorf("upstream %s: blob %s: got %d of %d bytes", src.repo, src.d, n, src.size)
	}
	if err != nil {
		dl.Fail(err)
	}
	werr := dl.Wait(ctx)
	dl.Release()
	if perr := <-published; werr == nil {
		werr = perr
	}
	return werr
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
