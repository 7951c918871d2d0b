package agent

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/tlsconf"
)

// emptyBlob needs no transfer at all.
var emptyBlob = digest.FromBytes(nil)

func (a *Agent) handleBlob(w http.ResponseWriter, r *http.Request, ns, ref string) {
	d, err := digest.Parse(ref)
	if err == nil && d.Algorithm() != digest.SHA256 {
		err = digest.ErrDigestUnsupported
	}
	if err != nil {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeDigestInvalid, "invalid digest %q: %v", ref, err))
		return
	}
	if d == emptyBlob {
		httpx.SetBlobHeaders(w, d)
		w.Header().Set("Content-Length", "0")
		return
	}
	ctx := r.Context()
	// Only a committed blob is served straight from the store. A running
	// download is followed as a member of its pull (below): a client that
	// followed it on the side would not keep it going, and would be cut
	// off when the pull's last member left.
	blob, size, err := a.store.OpenStored(d)
	switch {
	case err == nil:
		a.requests.WithLabelValues("hit").Inc()
		go a.ensureSeeding(d)
	case !errors.Is(err, store.ErrNotFound):
		httpx.WriteError(w, r, err)
		return
	case r.Method == http.MethodHead:
		// A HEAD never starts a download: the size comes from the metainfo.
		a.requests.WithLabelValues("head_miss").Inc()
		mctx, cancel := context.WithTimeout(ctx, a.cfg.MetainfoTimeout)
		size, err := a.headSize(mctx, ns, d)
		cancel()
		if err != nil {
			httpx.WriteError(w, r, metaErr(err))
			return
		}
		httpx.SetBlobHeaders(w, d)
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		return
	default:
		p, joined, err := a.joinPull(ctx, ns, d)
		if err != nil {
			return // the client left
		}
		defer a.pulls.Leave(p)
		if joined {
			a.requests.WithLabelValues("joined").Inc()
		} else {
			a.requests.WithLabelValues("miss").Inc()
		}
		select {
		case <-p.Ready():
		case <-ctx.Done():
			return
		}
		if err := p.Value(); err != nil {
			httpx.WriteError(w, r, metaErr(err))
			return
		}
		if blob, size, err = a.store.OpenOrFollow(ctx, d); err != nil {
			httpx.WriteError(w, r, httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "download failed"))
			return
		}
	}
	defer blob.Close()
	a.served.Add(float64(httpx.ServeBlob(w, r, d, size, store.Content(blob))))
}

// headSize is the size of blob d for a HEAD: from its metainfo, or, when no
// tracker answers, from an origin's HEAD (as a GET would fall back to the
// origins), so that an origin's own answer (a registry it is not
// configured for) reaches the client rather than "no tracker".
func (a *Agent) headSize(ctx context.Context, ns string, d digest.Digest) (int64, error) {
	mi, err := a.meta.get(ctx, ns, d)
	if err == nil {
		return mi.Info.Length, nil
	}
	var he *httpx.Error
	if errors.As(err, &he) || a.cfg.DisableFallback || ctx.Err() != nil {
		return 0, err
	}
	var errs []error
	for _, o := range a.cluster.origins.Pick(d.String(), 0) {
		size, oerr := a.originHead(ctx, o, ns, d)
		if oerr == nil {
			return size, nil
		}
		if errors.As(oerr, &he) && he.Status < 500 {
			return 0, he
		}
		errs = append(errs, oerr)
	}
	return 0, errors.Join(append([]error{err}, errs...)...)
}

// metaErr turns a metainfo failure into what the client sees: the tracker's
// own OCI error if it gave one, else 502.
func metaErr(err error) error {
	var he *httpx.Error
	if errors.As(err, &he) {
		return he
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return httpx.Wrap(err, http.StatusGatewayTimeout, httpx.CodeUnavailable, "timed out asking the tracker for the blob")
	}
	return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "no tracker could provide the blob"+tlsconf.Cause(err))
}
