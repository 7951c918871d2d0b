package clienttest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"

	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// containerd2Dir is where .ci/run installs containerd 2.x and its ctr (go
// install, CGO off), beside Debian's containerd 1.6 in /usr/bin, which
// TestContainerdHostsMirror drives. SHOAL_CONTAINERD2_BIN names another
// directory holding both.
const containerd2Dir = "/usr/local/lib/shoal-ci/containerd2/bin"

// The transfer service's settings under test: each layer is fetched as
// parallel open-ended `Range: bytes=N-` requests of which containerd reads
// one chunk, then closes the connection.
const (
	layerFetchChunk = 1 << 20 // concurrent_layer_fetch_buffer
	maxDownloads    = 4       // max_concurrent_downloads: requests in flight per pull
)

// TestContainerd2TransferServiceRangedPull: containerd 2.x pulls through its
// transfer service (ctr's default; --local would bypass it) with
// concurrent_layer_fetch_buffer set, so each layer arrives as parallel
// ranged requests whose connections close once their chunk is read. The
// image has one 64 MiB layer of random bytes and two small ones. First a
// CNCF distribution pull-through cache, cold, is the mirror (the baseline),
// then a cold Shoal agent. Both pulls must succeed and list the image; the
// agent's must go through the swarm with the origins sending the image about
// once; the two times are logged (the target is 1.5x the baseline's).
func TestContainerd2TransferServiceRangedPull(t *testing.T) {
	containerd, ctr := containerd2Bins(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP: containerd needs root (it mounts snapshots and owns its root dir); run as root")
	}
	const big = 64 << 20
	img, err := localregistry.ImageOfLayers(2012, 256<<10, big, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	c, s := startClusterWithImage(t, "clienttest/containerd2", img)
	regHost := c.UpstreamHost
	bigLayer := s.Layers[1].String()
	ref := fmt.Sprintf("%s/%s:%s", regHost, s.Repo, s.Tag)
	t.Logf("image %s: %d blobs, %.1f MiB; big layer %s", ref, len(s.Layers)+1, float64(s.Bytes)/(1<<20), bigLayer)

	// containerd falls back to the hosts.toml server when a mirror fails:
	// that server is a recording proxy to the upstream, so a pull that
	// went around the mirror shows.
	direct, directX := recordingProxy(t, c.Registry.URL())

	pull := func(name, mirror string) (time.Duration, bool) {
		dir := t.TempDir()
		hostsDir := filepath.Join(dir, "certs.d")
		writeHostsTOMLServer(t, hostsDir, regHost, direct.URL, mirror)
		sock := startContainerd2(t, containerd, ctr, dir, hostsDir)
		took, err := ctrPull(ctr, sock, hostsDir, ref)
		if err != nil {
			t.Errorf("%s: %v\ncontainerd log (warnings and errors):\n%s", name, err, containerdLogProblems(dir))
			return took, false
		}
		t.Logf("%s: ctr images pull took %.2fs", name, took.Seconds())
		ls, err := tryRun(time.Minute, ctr, "--address", sock, "--namespace", "clienttest", "images", "ls")
		if err != nil || !strings.Contains(ls, s.Manifest.String()) {
			t.Errorf("%s: ctr images ls does not list %s with digest %s (%v):\n%s", name, ref, s.Manifest, err, ls)
			return took, false
		}
		return took, true
	}

	// The baseline: a cold pull-through cache as the mirror.
	c.Registry.ResetCounts()
	cache, cacheX := recordingProxy(t, startPullThroughCache(t, t.TempDir(), c.Registry.URL()))
	cacheTook, cacheOK := pull("via the pull-through cache", cache.URL)
	t.Logf("pull-through cache: all blobs: %s", cacheX.stats("/blobs/"))
	t.Logf("pull-through cache: big layer: %s", cacheX.stats(bigLayer))
	t.Logf("pull-through cache: upstream sent %.1f MiB, %d GETs of the big layer", float64(c.Registry.BytesSent())/(1<<20), c.Registry.BlobGets(bigLayer))
	t.Logf("requests through the pull-through cache:\n%s", cacheX.lines())
	noDetour(t, "via the pull-through cache", directX)

	// The subject: a cold agent as the mirror.
	c.Registry.ResetCounts()
	a := c.Agents[0]
	agent, agentX := recordingProxy(t, a.URL())
	agentTook, agentOK := pull("via the agent", agent.URL)
	sent := originsSent(t, c)
	t.Logf("agent: all blobs: %s", agentX.stats("/blobs/"))
	t.Logf("agent: big layer: %s", agentX.stats(bigLayer))
	t.Logf("agent: origins sent %.1f MiB (%.2fx the image's %.1f MiB); upstream sent %.1f MiB, %d GETs of the big layer; agent pulls: %s; fallbacks: %s",
		float64(sent)/(1<<20), float64(sent)/float64(s.Bytes), float64(s.Bytes)/(1<<20),
		float64(c.Registry.BytesSent())/(1<<20), c.Registry.BlobGets(bigLayer),
		metricLines(t, a.AdminURL()+"/metrics", "shoal_agent_pulls_total"), metricLines(t, a.AdminURL()+"/metrics", "shoal_agent_fallbacks_total"))
	t.Logf("requests through the agent:\n%s", agentX.lines())
	noDetour(t, "via the agent", directX)

	if st := agentX.stats(bigLayer); st.ranged < 2 {
		t.Errorf("containerd sent %d ranged requests for the big layer: the transfer service's parallel layer fetch did not run, the test proves nothing", st.ranged)
	}
	if st := agentX.stats("/blobs/"); st.serverErrors > 0 || st.cutShort > 0 || st.gaveUp > 0 {
		t.Errorf("the agent answered %d blob requests with 5xx, cut %d bodies short, and had not answered %d when containerd gave up on them",
			st.serverErrors, st.cutShort, st.gaveUp)
	}
	if sent > s.Bytes*11/10 {
		t.Errorf("origins sent %d bytes, %.2fx the image's %d: want at most 1.1x", sent, float64(sent)/float64(s.Bytes), s.Bytes)
	}
	if agentOK && cacheOK {
		t.Logf("pull via the agent %.2fs, via the pull-through cache %.2fs: %.2fx", agentTook.Seconds(), cacheTook.Seconds(), agentTook.Seconds()/cacheTook.Seconds())
		// The target (1.5x) is a measurement, reported in the notes and
		// docs/benchmarks.md, not asserted: timings near a second on a
		// shared machine are too noisy (one fresh-clone run measured 5.4x,
		// the runs before and after 1.2-1.6x). What the broken pull did
		// (chunks fetched again, 5xx, bodies cut short) is asserted above.
	}
}

// containerd2Bins returns containerd 2.x's containerd and ctr, from
// $SHOAL_CONTAINERD2_BIN or containerd2Dir, and skips the test when they
// are missing or are not 2.x.
func containerd2Bins(t *testing.T) (containerd, ctr string) {
	t.Helper()
	dir := os.Getenv("SHOAL_CONTAINERD2_BIN")
	if dir == "" {
		dir = containerd2Dir
	}
	containerd, ctr = filepath.Join(dir, "containerd"), filepath.Join(dir, "ctr")
	for _, p := range []string{containerd, ctr} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			t.Skipf("SKIP: %s is missing: this test drives containerd 2.x; .ci/run installs it there (or set SHOAL_CONTAINERD2_BIN to a directory holding containerd and ctr 2.x)", p)
		}
	}
	out, err := tryRun(10*time.Second, containerd, "--version")
	if err != nil {
		t.Skipf("SKIP: %s --version: %v: %s", containerd, err, out)
	}
	if !strings.Contains(out, "containerd/v2 ") {
		t.Skipf("SKIP: %s is not containerd 2.x: %s", containerd, strings.TrimSpace(out))
	}
	return containerd, ctr
}

// startContainerd2 runs a private containerd 2.x under dir and returns its
// socket. Config version 3 (containerd 2.0 on; 2.4 migrates it to its
// version 4 when it loads). Unpacking uses the native snapshotter, which
// needs no kernel features. The transfer service fetches layers in parallel
// chunks; its config_path is set, but containerd 2.4 does not read it
// (containerd#12550): ctr passes --hosts-dir with every pull.
func startContainerd2(t *testing.T, containerd, ctr, dir, hostsDir string) string {
	t.Helper()
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.cri.v1.images",
  "io.containerd.cri.v1.runtime",
  "io.containerd.podsandbox.controller.v1.podsandbox",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q

[plugins.'io.containerd.internal.v1.opt']
  path = %q

[plugins.'io.containerd.transfer.v1.local']
  max_concurrent_downloads = %d
  concurrent_layer_fetch_buffer = %d
  config_path = %q

  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"
    differ = "walking"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc",
		filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"),
		maxDownloads, layerFetchChunk, hostsDir)
	runContainerd(t, containerd, ctr, dir, cfg, sock)
	return sock
}

// ctrPull pulls ref with ctr through containerd's transfer service and
// times it. Success is ctr's exit status: its progress display may exit
// before it prints its last line.
func ctrPull(ctr, sock, hostsDir, ref string) (time.Duration, error) {
	start := time.Now()
	out, err := tryRun(3*time.Minute, ctr, "--address", sock, "--namespace", "clienttest",
		"images", "pull", "--hosts-dir", hostsDir, "--plain-http", "--snapshotter", "native", "--platform", "linux/amd64", ref)
	took := time.Since(start)
	if err != nil {
		return took, fmt.Errorf("ctr images pull %s failed after %.2fs: %v\n%s", ref, took.Seconds(), err, out[max(0, len(out)-2000):])
	}
	return took, nil
}

// writeHostsTOMLServer writes <dir>/<host>/hosts.toml with server as the
// registry's address and mirror as a pull/resolve mirror.
func writeHostsTOMLServer(t *testing.T, dir, host, server, mirror string) {
	t.Helper()
	d := filepath.Join(dir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", server, mirror)
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// noDetour fails the test if containerd asked the registry itself for a
// manifest or blob (it does when the mirror fails), then forgets those
// requests.
func noDetour(t *testing.T, name string, x *exchanges) {
	t.Helper()
	if st := x.stats("/v2/"); st.requests > 0 {
		t.Errorf("%s: containerd went around the mirror to the registry itself:\n%s", name, x.lines())
	}
	x.mu.Lock()
	x.list = nil
	x.mu.Unlock()
}

// startPullThroughCache serves a CNCF distribution registry configured as
// a pull-through cache of remote (proxy.remoteurl), storing under dir;
// nothing it caches expires. It returns its URL.
func startPullThroughCache(t *testing.T, dir, remote string) string {
	t.Helper()
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": dir},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	never := time.Duration(0)
	cfg.Proxy = configuration.Proxy{RemoteURL: remote, TTL: &never}
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	srv := httptest.NewServer(handlers.NewApp(context.Background(), cfg))
	t.Cleanup(srv.Close)
	return srv.URL
}

// originsSent is what the cluster's origins sent in all: pieces to peers,
// and blob bytes over HTTP (the agents' fallback).
func originsSent(t *testing.T, c *cluster.Cluster) int64 {
	t.Helper()
	var n int64
	for _, o := range c.Origins {
		n += o.BytesSent() + int64(metric(t, o.URL()+"/metrics", "shoal_origin_http_blob_bytes_total"))
	}
	return n
}

// metricLines returns every sample of the metric family name on a
// Prometheus endpoint, "; "-separated ("none" if it has none).
func metricLines(t *testing.T, url, name string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics %s: %v", url, err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name+"{") || strings.HasPrefix(l, name+" ") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "; ")
}

// containerdLogProblems returns the warning and error lines of the
// containerd log in dir, at most the last 40.
func containerdLogProblems(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "containerd.log"))
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "level=error") || strings.Contains(l, "level=warning") {
			out = append(out, l)
		}
	}
	return strings.Join(out[max(0, len(out)-40):], "\n")
}
