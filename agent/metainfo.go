package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
)

// maxMetainfo bounds a metainfo body: 20 bytes per piece, so 16 MiB covers
// blobs far beyond any image layer.
const maxMetainfo = 16 << 20

// metainfoClient asks the trackers for a blob's metainfo.
type metainfoClient struct {
	trackers []string
	hc       *http.Client
}

func newMetainfoClient(trackers []string, p2pListen string) *metainfoClient {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if ap, err := netip.ParseAddrPort(p2pListen); err == nil && !ap.Addr().IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: ap.Addr().AsSlice()}
	}
	return &metainfoClient{trackers: trackers, hc: &http.Client{Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}}
}

// get returns the metainfo of blob d in namespace ns. A tracker's 4xx answer
// is final (passed on as an OCI error); on other failures the next tracker
// is tried.
func (c *metainfoClient) get(ctx context.Context, ns string, d digest.Digest) (*p2p.MetaInfo, error) {
	var errs []error
	for _, t := range c.trackers {
		u := fmt.Sprintf("%s/namespace/%s/blobs/%s/metainfo", t, url.PathEscape(ns), d)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			errs = append(errs, fmt.Errorf("tracker %s: %w", t, err))
			continue
		}
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			e := httpx.DecodeError(resp)
			resp.Body.Close()
			return nil, e
		}
		if resp.StatusCode != http.StatusOK {
			// The tracker answered, but its origins failed: keep its OCI
			// error (the HTTP fallback would ask the same origins).
			e := httpx.DecodeError(resp)
			resp.Body.Close()
			errs = append(errs, e)
			continue
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetainfo+1))
		resp.Body.Close()
		if err == nil && len(body) > maxMetainfo {
			err = errors.New("metainfo too large")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("tracker %s: %w", t, err))
			continue
		}
		mi, err := p2p.ParseMetaInfo(body, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("tracker %s: %w", t, err))
			continue
		}
		return mi, nil
	}
	return nil, errors.Join(errs...)
}
