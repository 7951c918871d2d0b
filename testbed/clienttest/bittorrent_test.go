package clienttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// Loopback addresses of the BitTorrent clients under test, apart from the
// cluster's (origins 127.0.0.2+, agents 127.0.0.10+).
const (
	aria2IP     = "127.0.0.60"
	anacrolixIP = "127.0.0.61"
)

// TestBitTorrentClientsDownloadThroughTheTracker: ordinary BitTorrent
// clients, given only the standard torrent from the tracker's
// /namespace/{ns}/blobs/{digest}/torrent (no DHT, PEX or local discovery),
// download a blob from the cluster and get bytes that hash to its digest:
// aria2c and a plain anacrolix/torrent client, first when only an origin
// holds the blob, then when only agents do.
func TestBitTorrentClientsDownloadThroughTheTracker(t *testing.T) {
	const size = 6<<20 + 4321
	c, err := cluster.Start(cluster.Options{Dir: t.TempDir(), Agents: 2, Origins: 1, PieceLength: 256 << 10, Log: testutil.Logger(t)})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	push := func(repo string, seed uint64) digest.Digest {
		d, err := c.Registry.PushBlob(ctx, repo, localregistry.RandomBytes(size, seed))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	origin := c.Origins[0]
	clients := []struct {
		name     string
		download func(t *testing.T, ctx context.Context, torrentFile string, d digest.Digest) []byte
	}{
		{"aria2c", aria2cDownload},
		{"anacrolix", anacrolixDownload},
	}

	t.Run("only an origin holds it", func(t *testing.T) {
		repo := "clienttest/bt-origin"
		d := push(repo, 301)
		// The origin fetches the blob for an HTTP client; no agent has it.
		if resp, body := httpGet(t, ctx, fmt.Sprintf("%s/namespace/%s/blobs/%s", origin.URL(), url.PathEscape(repo), d)); resp.StatusCode != http.StatusOK || len(body) != size {
			t.Fatalf("origin GET: %d, %d bytes", resp.StatusCode, len(body))
		}
		raw := waitTorrent(t, ctx, c, repo, d)
		std := parseStandard(t, raw, d)
		waitSeeds(t, c, std.InfoHash, 1)
		for _, cl := range clients {
			t.Run(cl.name, func(t *testing.T) {
				sent := origin.BytesSent()
				got := cl.download(t, ctx, writeTorrent(t, raw), d)
				checkDigest(t, got, d)
				if n := origin.BytesSent() - sent; n < size {
					t.Errorf("the origin sent %d bytes, want at least the blob's %d", n, size)
				}
			})
		}
	})

	t.Run("only agents hold it", func(t *testing.T) {
		repo := "clienttest/bt-agents"
		d := push(repo, 302)
		for i, a := range c.Agents {
			if resp, body := httpGet(t, ctx, fmt.Sprintf("%s/v2/%s/blobs/%s", a.URL(), repo, d)); resp.StatusCode != http.StatusOK || len(body) != size {
				t.Fatalf("pull through agent %d: %d, %d bytes", i, resp.StatusCode, len(body))
			}
		}
		raw := waitTorrent(t, ctx, c, repo, d) // the tracker caches it
		std := parseStandard(t, raw, d)
		waitSeeds(t, c, std.InfoHash, 3) // the origin and both agents
		c.Stop(origin)                   // it announces "stopped"
		waitSeeds(t, c, std.InfoHash, 2)
		for _, cl := range clients {
			t.Run(cl.name, func(t *testing.T) {
				var sent int64
				for _, a := range c.Agents {
					sent -= a.Node().BytesSent()
				}
				got := cl.download(t, ctx, writeTorrent(t, raw), d)
				checkDigest(t, got, d)
				for _, a := range c.Agents {
					sent += a.Node().BytesSent()
				}
				if sent < size {
					t.Errorf("the agents sent %d bytes, want at least the blob's %d", sent, size)
				}
			})
		}
	})
}

func httpGet(t *testing.T, ctx context.Context, u string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return resp, body
}

// waitTorrent fetches d's .torrent from the tracker, polling while the
// origin still commits the blob (409) and checking what a client relies on.
func waitTorrent(t *testing.T, ctx context.Context, c *cluster.Cluster, repo string, d digest.Digest) []byte {
	t.Helper()
	u := fmt.Sprintf("%s/namespace/%s/blobs/%s/torrent", c.Tracker.URL(), url.PathEscape(repo), d)
	var resp *http.Response
	var body []byte
	poll(t, 30*time.Second, func() (bool, string) {
		resp, body = httpGet(t, ctx, u)
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("the tracker has no torrent of %s: %d %q", d, resp.StatusCode, body)
	})
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-bittorrent" {
		t.Errorf("Content-Type %q, want application/x-bittorrent", ct)
	}
	mi, err := metainfo.Load(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if mi.Announce != c.Tracker.AnnounceURL() {
		t.Fatalf("announce %q, want the tracker's %q", mi.Announce, c.Tracker.AnnounceURL())
	}
	return body
}

func parseStandard(t *testing.T, raw []byte, d digest.Digest) *p2p.MetaInfo {
	t.Helper()
	std, err := p2p.ParseStandard(raw, d)
	if err != nil {
		t.Fatal(err)
	}
	return std
}

// waitSeeds waits until the tracker lists n seeds of ih.
func waitSeeds(t *testing.T, c *cluster.Cluster, ih metainfo.Hash, n int) {
	t.Helper()
	u, err := url.Parse(c.Tracker.URL() + "/announce")
	if err != nil {
		t.Fatal(err)
	}
	cl := httpTracker.NewClient(u, httpTracker.NewClientOpts{})
	defer cl.Close()
	var id [20]byte
	copy(id[:], "-XX0001-probe0000000")
	poll(t, 15*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		// "stopped": counted, never listed.
		resp, err := cl.Announce(ctx, httpTracker.AnnounceRequest{InfoHash: ih, PeerId: id, Port: 1, Left: 1, NumWant: 0, Event: 3}, httpTracker.AnnounceOpt{})
		if err != nil {
			return false, fmt.Sprintf("announce probe for %s: %v", ih, err)
		}
		return int(resp.Seeders) == n, fmt.Sprintf("the tracker lists %d seeds of %s, want %d", resp.Seeders, ih, n)
	})
}

// poll is testutil.Eventually for a condition that says what it saw last.
func poll(t *testing.T, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	var last string
	testutil.Eventually(t, timeout, func() bool {
		var ok bool
		ok, last = cond()
		return ok
	}, "%v", stringer(func() string { return last }))
}

// stringer formats as what its function returns when formatted.
type stringer func() string

func (s stringer) String() string { return s() }

func writeTorrent(t *testing.T, raw []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "blob.torrent")
	if err := os.WriteFile(p, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func checkDigest(t *testing.T, got []byte, d digest.Digest) {
	t.Helper()
	sum := sha256.Sum256(got)
	if hex.EncodeToString(sum[:]) != d.Encoded() {
		t.Fatalf("downloaded %d bytes that hash to sha256:%x, want %s", len(got), sum, d)
	}
}

// freePort is a free TCP port on ip (for a client that must be told one).
func freePort(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// aria2cDownload runs aria2c on torrentFile with its own address and port,
// DHT, PEX and local peer discovery off, and stops it once the download is
// complete; it returns the file it wrote.
func aria2cDownload(t *testing.T, ctx context.Context, torrentFile string, d digest.Digest) []byte {
	t.Helper()
	if _, err := exec.LookPath("aria2c"); err != nil {
		t.Skip("SKIP: aria2c is not installed (not on PATH; Debian package aria2, which .ci/run installs): this test drives the real client")
	}
	dir := t.TempDir()
	args := []string{
		"--no-conf", "--dir=" + dir, "--interface=" + aria2IP, "--listen-port=" + strconv.Itoa(freePort(t, aria2IP)),
		"--enable-dht=false", "--enable-dht6=false", "--enable-peer-exchange=false", "--bt-enable-lpd=false",
		"--seed-time=0", "--bt-stop-timeout=60", "--bt-tracker-connect-timeout=5", "--bt-tracker-timeout=10",
		"--file-allocation=none", "--summary-interval=0", "--console-log-level=warn",
		torrentFile,
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(dctx, "aria2c", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("aria2c %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("aria2c downloaded the blob in %.2fs", time.Since(start).Seconds())
	got, err := os.ReadFile(filepath.Join(dir, d.Encoded()))
	if err != nil {
		t.Fatalf("aria2c wrote no file %s: %v\n%s", d.Encoded(), err, out)
	}
	return got
}

// anacrolixDownload runs a plain anacrolix/torrent client (default settings,
// trackers on, DHT off) on torrentFile and returns the file it wrote.
func anacrolixDownload(t *testing.T, ctx context.Context, torrentFile string, d digest.Digest) []byte {
	t.Helper()
	mi, err := metainfo.LoadFromFile(torrentFile)
	if err != nil {
		t.Fatal(err)
	}
	cc := torrent.NewDefaultClientConfig()
	cc.DataDir = t.TempDir()
	cc.SetListenAddr(anacrolixIP + ":0")
	cc.NoDHT, cc.DisableIPv6, cc.NoDefaultPortForwarding = true, true, true
	// Announce from the client's own address, as it would on its own host.
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(anacrolixIP)}}
	cc.TrackerDialContext = dialer.DialContext
	cc.Slogger = slog.New(slog.DiscardHandler)
	cl, err := torrent.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tor, err := cl.AddTorrent(mi)
	if err != nil {
		t.Fatal(err)
	}
	tor.DownloadAll()
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	select {
	case <-tor.Complete().On():
	case <-dctx.Done():
		t.Fatalf("the client got %d of %d bytes in 2 minutes (%d peers known)", tor.BytesCompleted(), tor.Length(), len(tor.KnownSwarm()))
	}
	t.Logf("anacrolix/torrent downloaded the blob in %.2fs", time.Since(start).Seconds())
	got, err := os.ReadFile(filepath.Join(cc.DataDir, d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return got
}
