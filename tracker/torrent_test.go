package tracker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/tracker"
)

// torrentBody is an origin's standard torrent of d (as if d were 40 KiB of
// zeros: the tracker cannot check piece hashes, only the torrent's shape).
func torrentBody(t *testing.T, d digest.Digest) []byte {
	h, err := p2p.HashesOf(bytes.NewReader(make([]byte, 40<<10)), 40<<10, 16<<10)
	if err != nil {
		t.Error(err)
		return nil
	}
	std, err := p2p.BuildStandard(d, 40<<10, h)
	if err != nil {
		t.Error(err)
		return nil
	}
	return std.Raw()
}

func getTorrent(t *testing.T, srv *tracker.Server, ns, d string) (int, []byte, string) {
	t.Helper()
	resp, err := http.Get(srv.URL() + "/namespace/" + ns + "/blobs/" + d + "/torrent")
	if err != nil {
		t.Fatalf("GET torrent: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, body, ociCode(t, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-bittorrent" {
		t.Fatalf("Content-Type = %q", ct)
	}
	return resp.StatusCode, body, ""
}

func ociCode(t *testing.T, body []byte) string {
	t.Helper()
	var oe ociError
	if err := json.Unmarshal(body, &oe); err != nil || len(oe.Errors) == 0 {
		t.Fatalf("error body is not OCI error JSON: %q", body)
	}
	return oe.Errors[0].Code
}

// The tracker hands out an origin's standard torrent with its own announce
// URL (external_url), the info dictionary untouched, and caches it.
func TestTorrentHasTheTrackersAnnounceURL(t *testing.T) {
	o := startOrigin(t, 0)
	srv := startTracker(t, tracker.Config{Origins: []string{o.URL}, ExternalURL: "https://tracker.example:8443/"})
	d := testDigest(1)
	for range 2 {
		status, body, code := getTorrent(t, srv, "library%2Fubuntu", d.String())
		if status != http.StatusOK {
			t.Fatalf("status %d %s", status, code)
		}
		mi, err := metainfo.Load(bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if mi.Announce != "https://tracker.example:8443/announce" {
			t.Fatalf("announce = %q, want external_url + /announce", mi.Announce)
		}
		want, _ := p2p.ParseStandard(torrentBody(t, d), d)
		if mi.HashInfoBytes() != want.InfoHash {
			t.Fatalf("info-hash %s, the origin's is %s", mi.HashInfoBytes(), want.InfoHash)
		}
	}
	if n := o.requests.Load(); n != 1 {
		t.Fatalf("origin got %d requests, want 1 (the second from the cache)", n)
	}
	// The live metainfo of the same digest is another entry.
	if status, body, _ := getMetainfo(t, srv, "library%2Fubuntu", d.String()); status != http.StatusOK || !bytes.Equal(body, metainfoBody(d)) {
		t.Fatalf("metainfo after torrent: status %d body %q", status, body)
	}
	if !metricValue(t, srv, `shoal_tracker_torrent_requests_total{result="hit"} 1`) ||
		!metricValue(t, srv, `shoal_tracker_torrent_requests_total{result="miss"} 1`) {
		t.Fatal("metrics do not show a torrent miss and a hit")
	}
}

// Without external_url, torrents announce to the tracker's bound address
// (the listen address with the real port, here 127.0.0.1).
func TestTorrentDefaultAnnounceURL(t *testing.T) {
	o := startOrigin(t, 0)
	srv := startTracker(t, tracker.Config{Origins: []string{o.URL}})
	if srv.AnnounceURL() != srv.URL()+"/announce" {
		t.Fatalf("AnnounceURL = %q, want %q", srv.AnnounceURL(), srv.URL()+"/announce")
	}
	_, body, _ := getTorrent(t, srv, "alpine", testDigest(2).String())
	mi, err := metainfo.Load(bytes.NewReader(body))
	if err != nil || mi.Announce != srv.URL()+"/announce" {
		t.Fatalf("announce %q (%v), want %q", mi.Announce, err, srv.URL()+"/announce")
	}
}

// A torrent is any holder's: when the owner of the digest does not hold
// the blob (404), the next origin is asked; when none does, the client gets
// 404 BLOB_UNKNOWN, not cached; other 4xx answers (409 while the blob still
// arrives) are final; a body that is not a standard torrent is a 502.
func TestTorrentOriginAnswers(t *testing.T) {
	t.Run("owner does not hold it", func(t *testing.T) {
		missing, holder := startOrigin(t, http.StatusNotFound), startOrigin(t, 0)
		origins := []string{missing.URL, holder.URL}
		d := digestOwnedBy(t, origins, missing.URL)
		srv := startTracker(t, tracker.Config{Origins: origins})
		if status, _, code := getTorrent(t, srv, "alpine", d.String()); status != http.StatusOK {
			t.Fatalf("status %d %s, want the holder's torrent", status, code)
		}
		if missing.requests.Load() != 1 || holder.requests.Load() != 1 {
			t.Fatalf("owner asked %d times, holder %d; want once each", missing.requests.Load(), holder.requests.Load())
		}
	})
	t.Run("nobody holds it", func(t *testing.T) {
		a, b := startOrigin(t, http.StatusNotFound), startOrigin(t, http.StatusNotFound)
		srv := startTracker(t, tracker.Config{Origins: []string{a.URL, b.URL}})
		for i := 1; i <= 2; i++ {
			if status, _, code := getTorrent(t, srv, "alpine", testDigest(3).String()); status != http.StatusNotFound || code != "BLOB_UNKNOWN" {
				t.Fatalf("got %d %s, want 404 BLOB_UNKNOWN", status, code)
			}
			if n := a.requests.Load() + b.requests.Load(); n != int64(2*i) {
				t.Fatalf("origins asked %d times after %d requests, want %d (not cached)", n, i, 2*i)
			}
		}
	})
	t.Run("still arriving", func(t *testing.T) {
		o := startOrigin(t, http.StatusConflict)
		srv := startTracker(t, tracker.Config{Origins: []string{o.URL}})
		if status, _, _ := getTorrent(t, srv, "alpine", testDigest(4).String()); status != http.StatusConflict {
			t.Fatalf("status %d, want the origin's 409", status)
		}
	})
	t.Run("live metainfo instead", func(t *testing.T) {
		o := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			d := digest.Digest(strings.Split(r.URL.Path, "/")[4])
			raw, _ := p2p.BuildMetaInfo(d, 40<<10, 16<<10)
			_, _ = w.Write(raw)
		}))
		t.Cleanup(o.Close)
		srv := startTracker(t, tracker.Config{Origins: []string{o.URL}})
		if status, _, code := getTorrent(t, srv, "alpine", testDigest(5).String()); status != http.StatusBadGateway || code != "UNAVAILABLE" {
			t.Fatalf("got %d %s, want 502 UNAVAILABLE", status, code)
		}
	})
}

func TestConfigExternalURL(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no hostname")
	}
	for _, tc := range []struct{ text, want string }{
		{``, "http://" + host + ":7600"},
		{`listen = "10.1.2.3:7601"`, "http://10.1.2.3:7601"},
		{`listen = "[::]:7600"`, "http://" + host + ":7600"},
		{`external_url = "https://tracker.example/shoal"`, "https://tracker.example/shoal"},
	} {
		cfg, err := loadConfig(t, tc.text)
		if err != nil || cfg.ExternalURL != tc.want {
			t.Errorf("%q: external_url %q (%v), want %q", tc.text, cfg.ExternalURL, err, tc.want)
		}
	}
	for _, bad := range []string{`external_url = "tracker:7600"`, `external_url = "ftp://x"`, `external_url = "http://x/?a=1"`} {
		if _, err := loadConfig(t, bad); err == nil || !strings.Contains(err.Error(), "external_url") {
			t.Errorf("%s: err %v, want one naming external_url", bad, err)
		}
	}
}

// Shoal's announce client asks for the peer list with peer IDs (BEP 3),
// not the compact form the library asks for by default: the engine knows
// origins by their IDs and keeps them outside conns_per_torrent.
func TestShoalAnnounceGetsPeerIDs(t *testing.T) {
	srv := startTracker(t, tracker.Config{})
	tc := p2p.NewTrackerClient([]string{srv.URL() + "/announce"}, netip.MustParseAddr("127.0.0.1"), nil)
	var ih metainfo.Hash
	copy(ih[:], "shoal-peer-id-test!!")
	var origin, agent [20]byte
	copy(origin[:], p2p.OriginPeerIDPrefix+"000000000001")
	copy(agent[:], "-SA0001-000000000002")
	ctx := context.Background()
	if _, err := tc.Announce(ctx, p2p.AnnounceArgs{InfoHash: ih, PeerID: origin, Port: 7001, Left: 0}); err != nil {
		t.Fatal(err)
	}
	resp, err := tc.Announce(ctx, p2p.AnnounceArgs{InfoHash: ih, PeerID: agent, Port: 7002, Left: 100})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range resp.Peers {
		ids = append(ids, string(p.ID))
	}
	if !slices.Contains(ids, string(origin[:])) {
		t.Fatalf("the announce listed peers %v without the origin's peer ID %q", resp.Peers, origin)
	}
}
