package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
)

// maxMetainfo bounds a metainfo body: 20 bytes per piece, so 16 MiB covers
// blobs far beyond any image layer.
const maxMetainfo = 16 << 20

// metainfoClient asks the trackers for a blob's metainfo.
type metainfoClient struct {
	trackers []string
	tracker  proto.TrackerClient
}

func newMetainfoClient(trackers []string, p2pListen string, tc *tlsconf.Source) *metainfoClient {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if ap, err := netip.ParseAddrPort(p2pListen); err == nil && !ap.Addr().IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: ap.Addr().AsSlice()}
	}
	hc := &http.Client{Transport: tc.Transport(&http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4})}
	return &metainfoClient{trackers: trackers, tracker: proto.TrackerClient{Client: proto.Client{HTTP: hc}}}
}

// get returns the metainfo of blob d in namespace ns. A tracker's 4xx answer
// is final (passed on as an OCI error); on other failures the next tracker
// is tried. A tracker's 5xx keeps its OCI error (its origins failed, and the
// HTTP fallback would ask the same origins).
func (c *metainfoClient) get(ctx context.Context, ns string, d digest.Digest) (*p2p.MetaInfo, error) {
	return proto.Failover(ctx, c.trackers, proto.Policy{}, func(ctx context.Context, t string) (*p2p.MetaInfo, error) {
		body, err := c.tracker.Metainfo(ctx, t, ns, d, maxMetainfo)
		if err != nil {
			return nil, err
		}
		mi, err := p2p.ParseMetaInfo(body, d)
		if err != nil {
			return nil, fmt.Errorf("tracker %s: %w", t, err)
		}
		return mi, nil
	})
}
