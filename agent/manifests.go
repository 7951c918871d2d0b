package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
)

// handleManifest serves a manifest by tag or digest. A tag is resolved by
// the build-index; the manifest itself is content-addressed and cached like
// a blob, so a pull by digest works even when nothing upstream answers.
func (a *Agent) handleManifest(w http.ResponseWriter, r *http.Request, ns, ref string) {
	d, tag, ok := parseRef(ref)
	if !ok {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeManifestInvalid,
			"reference %q is neither a tag nor a sha256 digest", ref))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.MetainfoTimeout)
	defer cancel()
	if tag != "" {
		mi, err := a.cluster.resolveTag(ctx, ns, tag)
		if err != nil {
			httpx.WriteError(w, r, manifestErr(err, ns+":"+tag))
			return
		}
		d = mi.Digest
		if r.Method == http.MethodHead && mi.MediaType != "" && mi.Size > 0 {
			setManifestHeaders(w, d, mi.MediaType, mi.Size)
			return
		}
	}
	body, mediaType, err := a.manifest(ctx, ns, d)
	if err != nil {
		httpx.WriteError(w, r, manifestErr(err, ns+"@"+d.String()))
		return
	}
	setManifestHeaders(w, d, mediaType, int64(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(body)
}

func setManifestHeaders(w http.ResponseWriter, d digest.Digest, mediaType string, size int64) {
	h := w.Header()
	h.Set("Content-Type", mediaType)
	h.Set(proto.HeaderContentDigest, d.String())
	h.Set("Etag", `"`+d.String()+`"`)
	h.Set("Content-Length", strconv.FormatInt(size, 10))
}

// manifest returns manifest d from the cache, or from an origin (one fetch
// however many clients ask at once), verified against d.
func (a *Agent) manifest(ctx context.Context, ns string, d digest.Digest) ([]byte, string, error) {
	if body, mt, err := a.cachedManifest(d); err == nil {
		a.requests.WithLabelValues("manifest_hit").Inc()
		return body, mt, nil
	}
	a.requests.WithLabelValues("manifest_miss").Inc()
	type result struct {
		body []byte
		mt   string
	}
	v, err, _ := a.manifests.Do(d.String(), func() (any, error) {
		body, mt, err := a.cluster.fetchManifest(ctx, ns, d)
		if err != nil {
			return nil, err
		}
		if err := a.cacheManifest(d, body, mt); err != nil {
			a.log.Warn("cache manifest", "digest", d, "err", err)
		}
		return result{body, mt}, nil
	})
	if err != nil {
		return nil, "", err
	}
	res := v.(result)
	return res.body, res.mt, nil
}

func (a *Agent) cachedManifest(d digest.Digest) ([]byte, string, error) {
	mt, err := a.store.ReadMeta(d, "mediatype")
	if err != nil {
		return nil, "", err
	}
	f, err := a.store.Open(d) // verified against d before it is served
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, "", err
	}
	if fi.Size() > maxManifest {
		return nil, "", fmt.Errorf("manifest %s: %d bytes", d, fi.Size())
	}
	body := make([]byte, fi.Size())
	if _, err := f.ReadAt(body, 0); err != nil && fi.Size() > 0 {
		return nil, "", err
	}
	return body, string(mt), nil
}

func (a *Agent) cacheManifest(d digest.Digest, body []byte, mediaType string) error {
	if err := a.store.WriteMeta(d, "mediatype", []byte(mediaType)); err != nil {
		return err
	}
	dl, err := a.store.Create(d, int64(len(body)))
	if errors.Is(err, store.ErrInProgress) {
		return nil
	}
	if err != nil {
		return err
	}
	defer dl.Release()
	if _, err := dl.Write(body); err != nil {
		return err
	}
	return dl.Wait(context.Background())
}

// manifestErr turns a resolution or fetch failure into the client's answer.
func manifestErr(err error, what string) error {
	var he *httpx.Error
	if errors.As(err, &he) {
		if he.Status == http.StatusNotFound && he.Code == httpx.CodeBlobUnknown {
			he.Code = httpx.CodeManifestUnknown
		}
		return he
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return httpx.Wrap(err, http.StatusGatewayTimeout, httpx.CodeUnavailable, "timed out resolving "+what)
	}
	return httpx.Wrap(err, http.StatusBadGateway, httpx.CodeUnavailable, "no origin or build-index could provide "+what+tlsconf.Cause(err))
}
