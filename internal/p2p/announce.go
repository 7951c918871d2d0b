package p2p

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/anacrolix/torrent/tracker/shared"
)

// trackerClient announces over the standard HTTP tracker protocol, from the
// node's own address so the tracker sees the address peers should dial.
type trackerClient struct {
	clients []httpTracker.Client
	// quiet announce with numwant=0, for nodes that dial nobody (the
	// library's client sends no numwant of its own).
	quiet []httpTracker.Client
	urls  []string
	ip    netip.Addr
}

func newTrackerClient(urls []string, ip netip.Addr) *trackerClient {
	if len(urls) == 0 {
		return nil
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	if ip.IsValid() && !ip.IsUnspecified() {
		d.LocalAddr = &net.TCPAddr{IP: ip.AsSlice()}
	}
	tc := &trackerClient{urls: urls, ip: ip}
	opts := httpTracker.NewClientOpts{DialContext: d.DialContext, AllowKeepAlive: true}
	for _, u := range urls {
		pu, _ := url.Parse(u) // validated with the config
		tc.clients = append(tc.clients, httpTracker.NewClient(pu, opts))
		qu := *pu
		q := qu.Query()
		q.Set("numwant", "0")
		qu.RawQuery = q.Encode()
		tc.quiet = append(tc.quiet, httpTracker.NewClient(&qu, opts))
	}
	return tc
}

type announceArgs struct {
	infoHash                   metainfo.Hash
	peerID                     [20]byte
	port                       uint16
	left, uploaded, downloaded int64
	event                      shared.AnnounceEvent
	noPeers                    bool // numwant=0: the announcing node dials nobody
}

// announce tries each tracker in order and returns the first answer.
func (tc *trackerClient) announce(ctx context.Context, a announceArgs) (httpTracker.AnnounceResponse, error) {
	var errs []error
	clients := tc.clients
	if a.noPeers {
		clients = tc.quiet
	}
	for i, c := range clients {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		opt := httpTracker.AnnounceOpt{UserAgent: "shoal"}
		if tc.ip.Is4() && !tc.ip.IsUnspecified() {
			opt.ClientIp4 = tc.ip.AsSlice()
		}
		resp, err := c.Announce(actx, httpTracker.AnnounceRequest{
			InfoHash: a.infoHash, PeerId: a.peerID, Port: a.port, Left: a.left,
			Uploaded: a.uploaded, Downloaded: a.downloaded, Event: a.event, NumWant: -1,
		}, opt)
		cancel()
		if err == nil {
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("tracker %s: %w", tc.urls[i], err))
	}
	return httpTracker.AnnounceResponse{}, errors.Join(errs...)
}
