package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/anacrolix/torrent/tracker/shared"

	"github.com/shoal-dev/shoal/internal/tlsconf"
)

// TrackerClient announces over the standard HTTP tracker protocol, from the
// node's own address so the tracker sees the address peers should dial.
// Nodes and origins' super-seeders (internal/p2p/superseed) share it.
type TrackerClient struct {
	clients []httpTracker.Client
	// quiet announce with numwant=0, for nodes that dial nobody (the
	// library's client sends no numwant of its own).
	quiet []httpTracker.Client
	urls  []string
	ip    netip.Addr
}

// NewTrackerClient announces to urls, tried in order, from ip; nil if there
// are no urls. https trackers are verified with tc (nil: the system roots).
func NewTrackerClient(urls []string, ip netip.Addr, tc *tlsconf.Source) *TrackerClient {
	if len(urls) == 0 {
		return nil
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if ip.IsValid() && !ip.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: ip.AsSlice()}
	}
	c := &TrackerClient{urls: urls, ip: ip}
	for _, u := range urls {
		pu, _ := url.Parse(u) // validated with the config
		opts := httpTracker.NewClientOpts{DialContext: d.DialContext, AllowKeepAlive: true}
		if pu.Scheme == "https" {
			// The library's client verifies no server certificate and
			// presents none: it gets an http:// URL and connections on
			// which our own verified TLS handshake is already done.
			u2 := *pu
			u2.Scheme = "http"
			pu = &u2
			opts.DialContext = tc.DialTLS(d.DialContext)
		}
		c.clients = append(c.clients, httpTracker.NewClient(pu, opts))
		qu := *pu
		q := qu.Query()
		q.Set("numwant", "0")
		qu.RawQuery = q.Encode()
		c.quiet = append(c.quiet, httpTracker.NewClient(&qu, opts))
	}
	return c
}

// AnnounceArgs is what one announce tells the tracker.
type AnnounceArgs struct {
	InfoHash                   metainfo.Hash
	PeerID                     [20]byte
	Port                       uint16
	Left, Uploaded, Downloaded int64
	Event                      shared.AnnounceEvent
	NoPeers                    bool // numwant=0: the announcing node dials nobody
}

// nonCompact asks for the peer list with peer IDs (BEP 3) instead of the
// compact form (BEP 23) the library always asks for: the IDs tell the
// engine which peers are origins, dialled whatever else it is connected to.
func nonCompact(r *http.Request) error {
	r.URL.RawQuery = strings.Replace(r.URL.RawQuery, "compact=1", "compact=0", 1)
	return nil
}

// Announce tries each tracker in order and returns the first answer.
func (tc *TrackerClient) Announce(ctx context.Context, a AnnounceArgs) (httpTracker.AnnounceResponse, error) {
	var errs []error
	clients := tc.clients
	if a.NoPeers {
		clients = tc.quiet
	}
	for i, c := range clients {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		opt := httpTracker.AnnounceOpt{UserAgent: "shoal", HttpRequestDirector: nonCompact}
		if tc.ip.Is4() && !tc.ip.IsUnspecified() {
			opt.ClientIp4 = tc.ip.AsSlice()
		}
		resp, err := c.Announce(actx, httpTracker.AnnounceRequest{
			InfoHash: a.InfoHash, PeerId: a.PeerID, Port: a.Port, Left: a.Left,
			Uploaded: a.Uploaded, Downloaded: a.Downloaded, Event: a.Event, NumWant: -1,
		}, opt)
		cancel()
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("tracker %s: %w", tc.urls[i], err))
	}
	return httpTracker.AnnounceResponse{}, errors.Join(errs...)
}
