package origin_test

import (
	"bytes"
	"crypto/sha1"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// gatedRegistry answers every blob GET with data, but sends only its first
// half until gate is closed.
func gatedRegistry(t *testing.T, data []byte, gate <-chan struct{}) (string, *atomic.Int64) {
	t.Helper()
	var gets atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			w.WriteHeader(http.StatusOK)
			return
		}
		gets.Add(1)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodGet {
			return
		}
		_, _ = w.Write(data[:len(data)/2])
		w.(http.Flusher).Flush()
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(data[len(data)/2:])
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &gets
}

func torrentURL(base, ns string, d digest.Digest) string {
	return base + "/namespace/" + ns + "/blobs/" + d.String() + "/torrent"
}

// TestStandardTorrentOnlyForCompleteBlobs: an origin answers a blob's
// standard torrent only once it holds the whole blob verified: 404 for a
// blob it does not hold (without fetching it), 409 while the blob still
// arrives from upstream, then the .torrent, with the real SHA-1 of every
// piece, seeded; a restarted origin answers it from its store alone.
func TestStandardTorrentOnlyForCompleteBlobs(t *testing.T) {
	const size = 3<<20 + 5 // 1 MiB pieces (newOrigin): 4 pieces
	data := localregistry.RandomBytes(size, 31)
	d := digest.FromBytes(data)
	gate := make(chan struct{})
	u, gets := gatedRegistry(t, data, gate)
	root := t.TempDir()
	o := startOrigin(t, root, nil, upstreamFor(t, u))
	ns := "test%2Fblob"

	resp, body := do(t, http.MethodGet, torrentURL(o.URL(), ns, d), nil)
	wantError(t, resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
	if n := gets.Load(); n != 0 {
		t.Fatalf("asking for the torrent of a blob not held sent %d GETs upstream, want none", n)
	}
	resp, body = do(t, http.MethodGet, o.URL()+"/namespace/"+ns+"/blobs/sha256:1234/torrent", nil)
	wantError(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")

	// The metainfo starts the fetch, which the gate holds at half the blob.
	if resp, body := do(t, http.MethodGet, metaURL(o, testRepo, d), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("metainfo: status %d %q", resp.StatusCode, body)
	}
	resp, body = do(t, http.MethodGet, torrentURL(o.URL(), ns, d), nil)
	wantError(t, resp, body, http.StatusConflict, "BLOB_INCOMPLETE")

	close(gate)
	testutil.Eventually(t, 30*time.Second, func() bool {
		resp, body = do(t, http.MethodGet, torrentURL(o.URL(), ns, d), nil)
		return resp.StatusCode == http.StatusOK
	}, "no standard torrent once the blob arrived: last answer %d %q", resp.StatusCode, body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-bittorrent" {
		t.Errorf("Content-Type %q, want application/x-bittorrent", ct)
	}
	std, err := p2p.ParseStandard(body, d)
	if err != nil {
		t.Fatal(err)
	}
	if h := resp.Header.Get("X-Shoal-Info-Hash"); h != std.InfoHash.HexString() {
		t.Errorf("X-Shoal-Info-Hash %q, want %s", h, std.InfoHash.HexString())
	}
	pl := std.Info.PieceLength
	if pl != 1<<20 || std.Info.NumPieces() != 4 || std.Info.Length != size {
		t.Fatalf("torrent: %d bytes in %d pieces of %d, want %d in 4 of 1 MiB (the live torrent's)", std.Info.Length, std.Info.NumPieces(), pl, size)
	}
	for i := range 4 {
		want := sha1.Sum(data[int64(i)*pl : min(int64(i+1)*pl, size)])
		if std.Info.Piece(i).V1Hash().Unwrap() != want {
			t.Errorf("piece %d: not the SHA-1 of its bytes", i)
		}
	}
	if !o.Seeder().Seeding(std.InfoHash) {
		t.Error("the origin does not seed the standard torrent it answers")
	}
	if !o.Seeding(d) {
		t.Error("the origin no longer seeds the live torrent")
	}

	// A new origin on the same store: the same torrent, nothing upstream.
	before := gets.Load()
	o2 := startOrigin(t, root, nil, upstreamFor(t, u))
	resp, body2 := do(t, http.MethodGet, torrentURL(o2.URL(), ns, d), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body2, body) {
		t.Fatalf("after a restart: status %d, same torrent %v", resp.StatusCode, bytes.Equal(body2, body))
	}
	if !o2.Seeder().Seeding(std.InfoHash) {
		t.Error("the restarted origin does not seed the standard torrent")
	}
	if n := gets.Load(); n != before {
		t.Errorf("the restarted origin sent %d GETs upstream for a stored blob", n-before)
	}
}
