package tracker_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/anacrolix/torrent/tracker/shared"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/tracker"
)

func infoHash(s string) (h [20]byte) {
	copy(h[:], fmt.Sprintf("%-20s", s))
	return h
}

// btPeer is one BitTorrent client identity announcing through the
// anacrolix/torrent HTTP tracker client.
type btPeer struct {
	t    *testing.T
	cl   httpTracker.Client
	id   [20]byte
	port uint16
	opt  httpTracker.AnnounceOpt
}

func newPeer(t *testing.T, srv *tracker.Server, name string, port uint16) *btPeer {
	u, err := url.Parse(srv.URL() + "/announce")
	if err != nil {
		t.Fatal(err)
	}
	cl := httpTracker.NewClient(u, httpTracker.NewClientOpts{})
	t.Cleanup(func() { _ = cl.Close() })
	p := &btPeer{t: t, cl: cl, port: port}
	copy(p.id[:], fmt.Sprintf("-SH0001-%-12s", name))
	return p
}

func (p *btPeer) announce(ih [20]byte, left int64, ev shared.AnnounceEvent) (httpTracker.AnnounceResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.cl.Announce(ctx, httpTracker.AnnounceRequest{
		InfoHash: ih, PeerId: p.id, Port: p.port, Left: left, Event: ev, NumWant: -1,
	}, p.opt)
}

func (p *btPeer) mustAnnounce(ih [20]byte, left int64, ev shared.AnnounceEvent) httpTracker.AnnounceResponse {
	p.t.Helper()
	resp, err := p.announce(ih, left, ev)
	if err != nil {
		p.t.Fatalf("announce port %d: %v", p.port, err)
	}
	return resp
}

func ports(resp httpTracker.AnnounceResponse) []int {
	var out []int
	for _, p := range resp.Peers {
		out = append(out, p.Port)
	}
	return out
}

// Two leechers of one blob each learn the other's address, never their own.
func TestAnnounceTwoPeersSeeEachOther(t *testing.T) {
	srv := startTracker(t, tracker.Config{})
	ih := infoHash("blob-a")
	a, b := newPeer(t, srv, "a", 6001), newPeer(t, srv, "b", 6002)

	resp := a.mustAnnounce(ih, 100, shared.Started)
	if len(resp.Peers) != 0 || resp.Leechers != 1 || resp.Seeders != 0 || resp.Interval != 30 {
		t.Fatalf("first announce: %+v", resp)
	}
	resp = b.mustAnnounce(ih, 100, shared.Started)
	if len(resp.Peers) != 1 || resp.Peers[0].Port != 6001 || !resp.Peers[0].IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("b sees %v, want a at 127.0.0.1:6001", resp.Peers)
	}
	if resp.Leechers != 2 {
		t.Fatalf("leechers = %d, want 2", resp.Leechers)
	}
	resp = a.mustAnnounce(ih, 50, shared.None)
	if got := ports(resp); len(got) != 1 || got[0] != 6002 {
		t.Fatalf("a sees ports %v, want [6002]", got)
	}
	// Another blob's swarm is separate.
	if resp := a.mustAnnounce(infoHash("blob-b"), 100, shared.Started); len(resp.Peers) != 0 {
		t.Fatalf("other swarm leaked peers: %v", resp.Peers)
	}
}

// A seeder (left=0) is listed before every leecher, and completed moves a
// leecher into the seeders.
func TestAnnounceSeederListedFirst(t *testing.T) {
	srv := startTracker(t, tracker.Config{})
	ih := infoHash("blob-seed")
	for i := range 4 {
		newPeer(t, srv, fmt.Sprint("leech", i), uint16(7000+i)).mustAnnounce(ih, 10, shared.Started)
	}
	seeder := newPeer(t, srv, "seed", 7100)
	seeder.mustAnnounce(ih, 0, shared.Started)

	for range 5 { // the sample is random; the seeder must lead every time
		resp := newPeer(t, srv, "asker", 7200).mustAnnounce(ih, 10, shared.None)
		if got := ports(resp); len(got) != 5 || got[0] != 7100 {
			t.Fatalf("peers ports %v, want 5 peers with the seeder 7100 first", got)
		}
		if resp.Seeders != 1 || resp.Leechers != 5 {
			t.Fatalf("counts seeders=%d leechers=%d, want 1 and 5", resp.Seeders, resp.Leechers)
		}
	}
	newPeer(t, srv, "leech0", 7000).mustAnnounce(ih, 0, shared.Completed)
	resp := newPeer(t, srv, "asker", 7200).mustAnnounce(ih, 10, shared.None)
	if got := ports(resp); len(got) != 5 || !(got[0] == 7000 && got[1] == 7100 || got[0] == 7100 && got[1] == 7000) {
		t.Fatalf("after completed: ports %v, want the two seeders first", got)
	}
	if resp.Seeders != 2 || resp.Leechers != 4 {
		t.Fatalf("after completed: seeders=%d leechers=%d", resp.Seeders, resp.Leechers)
	}
}

// event=stopped drops the peer from the swarm at once.
func TestAnnounceStoppedRemoves(t *testing.T) {
	srv := startTracker(t, tracker.Config{})
	ih := infoHash("blob-stop")
	a, b := newPeer(t, srv, "a", 6001), newPeer(t, srv, "b", 6002)
	a.mustAnnounce(ih, 0, shared.Started)
	b.mustAnnounce(ih, 10, shared.Started)
	resp := b.mustAnnounce(ih, 10, shared.Stopped)
	if len(resp.Peers) != 0 || resp.Seeders != 1 || resp.Leechers != 0 {
		t.Fatalf("stopped response: %+v", resp)
	}
	if resp := a.mustAnnounce(ih, 0, shared.None); len(resp.Peers) != 0 || resp.Leechers != 0 {
		t.Fatalf("a still sees %v after b stopped", resp.Peers)
	}
}

// Peers that stop announcing disappear after peer_ttl.
func TestAnnounceTTLExpiry(t *testing.T) {
	clk := testutil.NewClock(time.Unix(1_700_000_000, 0))
	srv := startTracker(t, tracker.Config{AnnounceInterval: 10 * time.Second}, tracker.WithClock(clk.Now))
	ih := infoHash("blob-ttl")
	a, b := newPeer(t, srv, "a", 6001), newPeer(t, srv, "b", 6002)
	a.mustAnnounce(ih, 10, shared.Started)
	clk.Advance(29 * time.Second) // default peer_ttl = 3 x 10s
	if resp := b.mustAnnounce(ih, 10, shared.Started); len(resp.Peers) != 1 {
		t.Fatalf("before TTL: %v", resp.Peers)
	}
	clk.Advance(2 * time.Second)
	if resp := b.mustAnnounce(ih, 10, shared.None); len(resp.Peers) != 0 || resp.Leechers != 1 {
		t.Fatalf("after a's TTL b still sees %v (leechers %d)", resp.Peers, resp.Leechers)
	}
}

// numwant is honoured and capped by max_peers.
func TestAnnounceNumWantAndMaxPeers(t *testing.T) {
	srv := startTracker(t, tracker.Config{MaxPeers: 3})
	ih := infoHash("blob-numwant")
	for i := range 6 {
		newPeer(t, srv, fmt.Sprint("p", i), uint16(8000+i)).mustAnnounce(ih, 10, shared.Started)
	}
	asker := newPeer(t, srv, "asker", 8100)
	if resp := asker.mustAnnounce(ih, 10, shared.Started); len(resp.Peers) != 3 {
		t.Fatalf("no numwant: got %d peers, want max_peers=3", len(resp.Peers))
	}
	for _, tc := range []struct {
		numwant string
		want    int
	}{{"2", 2}, {"0", 0}, {"100", 3}, {"-1", 3}} {
		asker.opt.HttpRequestDirector = setParam("numwant", tc.numwant)
		if resp := asker.mustAnnounce(ih, 10, shared.None); len(resp.Peers) != tc.want {
			t.Errorf("numwant=%s: got %d peers, want %d", tc.numwant, len(resp.Peers), tc.want)
		}
	}
}

// The ip parameter is only believed when trust_ip_param is set.
func TestAnnounceIPParam(t *testing.T) {
	for _, trust := range []bool{false, true} {
		t.Run(fmt.Sprint("trust=", trust), func(t *testing.T) {
			srv := startTracker(t, tracker.Config{TrustIPParam: trust})
			ih := infoHash("blob-ip")
			a, b := newPeer(t, srv, "a", 6001), newPeer(t, srv, "b", 6002)
			a.opt.ClientIp4 = net.IPv4(10, 1, 2, 3)
			a.mustAnnounce(ih, 10, shared.Started)
			resp := b.mustAnnounce(ih, 10, shared.Started)
			want := net.IPv4(127, 0, 0, 1)
			if trust {
				want = net.IPv4(10, 1, 2, 3)
			}
			if len(resp.Peers) != 1 || !resp.Peers[0].IP.Equal(want) {
				t.Fatalf("b sees %v, want a at %v", resp.Peers, want)
			}
		})
	}
}

// compact=0 gets the BEP 3 list of dictionaries with peer ids.
func TestAnnounceDictionaryPeers(t *testing.T) {
	srv := startTracker(t, tracker.Config{})
	ih := infoHash("blob-dict")
	a, b := newPeer(t, srv, "a", 6001), newPeer(t, srv, "b", 6002)
	a.mustAnnounce(ih, 10, shared.Started)
	b.opt.HttpRequestDirector = setParam("compact", "0")
	resp := b.mustAnnounce(ih, 10, shared.Started)
	if len(resp.Peers) != 1 || string(resp.Peers[0].ID) != string(a.id[:]) || resp.Peers[0].Port != 6001 {
		t.Fatalf("dictionary peers: %+v, want a with its peer id", resp.Peers)
	}
}

// setParam returns a request director that rewrites one query parameter
// (or deletes it when value is "<none>").
func setParam(name, value string) func(*http.Request) error {
	return func(r *http.Request) error {
		q := r.URL.Query()
		if value == "<none>" {
			q.Del(name)
		} else {
			q.Set(name, value)
		}
		r.URL.RawQuery = q.Encode()
		return nil
	}
}

// Every malformed announce gets HTTP 200 and a bencoded failure reason
// naming the bad parameter, which is what BitTorrent clients show.
func TestAnnounceBadInput(t *testing.T) {
	srv := startTracker(t, tracker.Config{TrustIPParam: true})
	cases := []struct{ param, value, want string }{
		{"info_hash", "<none>", "missing info_hash"},
		{"info_hash", strings.Repeat("x", 19), "invalid info_hash: want 20 bytes, got 19"},
		{"info_hash", strings.Repeat("x", 21), "invalid info_hash"},
		{"peer_id", "short", "invalid peer_id"},
		{"peer_id", "<none>", "missing peer_id"},
		{"port", "0", "invalid port"},
		{"port", "70000", "invalid port"},
		{"port", "abc", "invalid port"},
		{"port", "<none>", "missing port"},
		{"left", "-1", "invalid left"},
		{"left", "<none>", "missing left"},
		{"uploaded", "x", "invalid uploaded"},
		{"downloaded", "-5", "invalid downloaded"},
		{"event", "bogus", "invalid event"},
		{"numwant", "many", "invalid numwant"},
		{"ip", "not-an-ip", "invalid ip"},
	}
	for _, tc := range cases {
		t.Run(tc.param+"="+tc.value, func(t *testing.T) {
			p := newPeer(t, srv, "bad", 6001)
			p.opt.HttpRequestDirector = setParam(tc.param, tc.value)
			_, err := p.announce(infoHash("blob-bad"), 10, shared.Started)
			if err == nil || !strings.Contains(err.Error(), "failure reason") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got error %v, want a failure reason containing %q", err, tc.want)
			}
		})
	}
	// Not even a query string: still HTTP 200 with a failure reason.
	resp, err := http.Get(srv.URL() + "/announce?%zz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var hr httpTracker.HttpResponse
	if err := bencode.Unmarshal(body, &hr); err != nil || resp.StatusCode != 200 || !strings.Contains(hr.FailureReason, "info_hash") {
		t.Fatalf("garbage query: status %d body %q err %v", resp.StatusCode, body, err)
	}
}

// IPv6 peers travel in peers6 (BEP 7) next to the compact IPv4 list.
func TestAnnounceIPv6Peers(t *testing.T) {
	srv := startTracker(t, tracker.Config{TrustIPParam: true})
	ih := infoHash("blob-v6")
	a, b, c := newPeer(t, srv, "a", 6001), newPeer(t, srv, "b", 6002), newPeer(t, srv, "c", 6003)
	a.opt.ClientIp6 = net.ParseIP("fd00::a")
	a.mustAnnounce(ih, 0, shared.Started)
	b.mustAnnounce(ih, 10, shared.Started)
	resp := c.mustAnnounce(ih, 10, shared.Started)
	got := map[string]bool{}
	for _, p := range resp.Peers {
		got[fmt.Sprintf("%s:%d", p.IP, p.Port)] = true
	}
	if len(resp.Peers) != 2 || !got["fd00::a:6001"] || !got["127.0.0.1:6002"] {
		t.Fatalf("peers %v, want fd00::a:6001 and 127.0.0.1:6002", resp.Peers)
	}
}
