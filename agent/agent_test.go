package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

func start(t *testing.T, agents int) *cluster.Cluster {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, err := cluster.Start(cluster.Options{Dir: t.TempDir(), Agents: agents, Origins: 1, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return c
}

func push(t *testing.T, c *cluster.Cluster, repo string, size int64, seed uint64) ([]byte, digest.Digest) {
	t.Helper()
	data := localregistry.RandomBytes(size, seed)
	d, err := c.Registry.PushBlob(context.Background(), repo, data)
	if err != nil {
		t.Fatal(err)
	}
	c.Registry.ResetCounts()
	return data, d
}

type ociErrors struct {
	Errors []struct{ Code, Message string } `json:"errors"`
}

func do(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp, b
}

func wantOCIError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	var e ociErrors
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 || e.Errors[0].Code != code {
		t.Fatalf("body %s, want OCI error %s", body, code)
	}
}

func TestFiftyConcurrentGetsShareOneDownload(t *testing.T) {
	c := start(t, 1)
	data, d := push(t, c, "test/shared", 8<<20, 1)
	a := c.Agents[0]
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Go(func() {
			resp, err := http.Get(fmt.Sprintf("%s/v2/test/shared/blobs/%s", a.URL(), d))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(b, data) {
				errs <- fmt.Errorf("status %d, %d bytes, err %v", resp.StatusCode, len(b), err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := c.Registry.BlobGets(d.String()); n != 1 {
		t.Errorf("upstream GETs = %d, want 1", n)
	}
	// The pull counts itself once the blob is committed (synced and
	// renamed), a moment after its clients had the last byte.
	var m map[string]string
	testutil.Eventually(t, 10*time.Second, func() bool {
		m = metrics(t, a.AdminURL())
		return m[`shoal_agent_pulls_total{result="ok"}`] == "1"
	}, "swarm downloads (shoal_agent_pulls_total{result=\"ok\"}) never 1")
	miss, joined := m[`shoal_agent_blob_requests_total{result="miss"}`], m[`shoal_agent_blob_requests_total{result="joined"}`]
	hit := m[`shoal_agent_blob_requests_total{result="hit"}`]
	t.Logf("requests: miss %s, joined %s, hit %s", miss, joined, hit)
	if miss != "1" {
		t.Errorf("misses = %q, want 1 (the other 49 join or hit)", miss)
	}
}

func TestRangeOnCachedBlob(t *testing.T) {
	c := start(t, 1)
	data, d := push(t, c, "test/range", 5<<20+3, 2)
	url := fmt.Sprintf("%s/v2/test/range/blobs/%s", c.Agents[0].URL(), d)
	if resp, b := do(t, "GET", url); resp.StatusCode != 200 || !bytes.Equal(b, data) {
		t.Fatalf("first GET: %d, %d bytes", resp.StatusCode, len(b))
	}
	for _, tc := range []struct {
		rng        string
		start, end int // inclusive
	}{
		{"bytes=0-0", 0, 0},
		{"bytes=100-1099", 100, 1099},
		{fmt.Sprintf("bytes=%d-", len(data)-10), len(data) - 10, len(data) - 1},
		{"bytes=-7", len(data) - 7, len(data) - 1},
	} {
		resp, b := do(t, "GET", url, "Range", tc.rng)
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, data[tc.start:tc.end+1]) {
			t.Errorf("Range %s: status %d, %d bytes, want 206 with bytes %d-%d", tc.rng, resp.StatusCode, len(b), tc.start, tc.end)
		}
		if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, len(data)) {
			t.Errorf("Range %s: Content-Range %q", tc.rng, cr)
		}
	}
	for _, rng := range []string{fmt.Sprintf("bytes=%d-", len(data)), "bytes=9-3", "lines=1-2"} {
		resp, b := do(t, "GET", url, "Range", rng)
		wantOCIError(t, resp, b, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
		if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", len(data)) {
			t.Errorf("Range %s: Content-Range %q", rng, cr)
		}
	}
	// HEAD on the cached blob: size and digest, no body.
	resp, b := do(t, "HEAD", url)
	if resp.StatusCode != 200 || len(b) != 0 || resp.ContentLength != int64(len(data)) || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Errorf("HEAD: %d, len %d, digest %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Docker-Content-Digest"))
	}
}

func TestHeadDoesNotDownload(t *testing.T) {
	c := start(t, 1)
	data, d := push(t, c, "test/head", 3<<20, 3)
	a := c.Agents[0]
	resp, _ := do(t, "HEAD", fmt.Sprintf("%s/v2/test/head/blobs/%s", a.URL(), d))
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD: %d, Content-Length %d, want 200 and %d", resp.StatusCode, resp.ContentLength, len(data))
	}
	if _, err := a.Store().Stat(d); err == nil {
		t.Fatal("HEAD put the blob in the agent's cache")
	}
	if a.Node().Swarm(d.String()) != nil {
		t.Fatal("HEAD joined the swarm")
	}
}

func TestBadInputGetsClearErrorsAndWritesNothing(t *testing.T) {
	c := start(t, 1)
	a := c.Agents[0]
	unknown := digest.FromString("nobody has this")
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/test/x/blobs/sha256:1234", 400, "DIGEST_INVALID"},
		{"GET", "/v2/test/x/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", 400, "DIGEST_INVALID"},
		{"GET", "/v2/test/x/blobs/notadigest", 400, "DIGEST_INVALID"},
		{"GET", "/v2/test/x/blobs/" + unknown.String(), 404, "BLOB_UNKNOWN"},
		{"HEAD", "/v2/test/x/blobs/" + unknown.String(), 404, ""},
		{"GET", "/v2/Test/UPPER/blobs/" + unknown.String(), 400, "NAME_INVALID"},
		{"GET", "/v2/a..b/blobs/" + unknown.String(), 400, "NAME_INVALID"},
		{"PUT", "/v2/test/x/blobs/uploads/", 405, "UNSUPPORTED"},
		{"POST", "/v2/test/x/blobs/uploads/", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/test/x/blobs/" + unknown.String(), 405, "UNSUPPORTED"},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			start := time.Now()
			resp, b := do(t, tc.method, a.URL()+tc.path)
			if tc.code == "" {
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
				}
			} else {
				wantOCIError(t, resp, b, tc.status, tc.code)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %s", time.Since(start))
			}
		})
	}
	assertCacheEmpty(t, a)
	if resp, b := do(t, "GET", a.URL()+"/v2/"); resp.StatusCode != 200 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
		t.Errorf("GET /v2/: %d %s", resp.StatusCode, b)
	}
}

func TestUpstreamDownGivesBoundedErrorAndNoPartialFile(t *testing.T) {
	c := start(t, 1)
	_, d := push(t, c, "test/down", 1<<20, 4)
	c.Registry.SetDown(true)
	a := c.Agents[0]
	start := time.Now()
	resp, b := do(t, "GET", fmt.Sprintf("%s/v2/test/down/blobs/%s", a.URL(), d))
	if resp.StatusCode < 500 {
		t.Fatalf("status %d (%s), want a 5xx", resp.StatusCode, b)
	}
	var e ociErrors
	if json.Unmarshal(b, &e) != nil || len(e.Errors) == 0 {
		t.Fatalf("body %s is not OCI error JSON", b)
	}
	t.Logf("answered %d %s in %s", resp.StatusCode, e.Errors[0].Code, time.Since(start))
	if time.Since(start) > 30*time.Second {
		t.Errorf("took %s, want a bounded error", time.Since(start))
	}
	assertCacheEmpty(t, a)
	for _, o := range c.Origins {
		if ents, _ := os.ReadDir(filepath.Join(o.Store().Root(), "downloads")); len(ents) != 0 {
			t.Errorf("origin left %d files in downloads/", len(ents))
		}
	}
	// Upstream back: the same pull succeeds.
	c.Registry.SetDown(false)
	if resp, _ := do(t, "GET", fmt.Sprintf("%s/v2/test/down/blobs/%s", a.URL(), d)); resp.StatusCode != 200 {
		t.Fatalf("after recovery: %d", resp.StatusCode)
	}
}

func metrics(t *testing.T, base string) map[string]string {
	t.Helper()
	resp, b := do(t, "GET", base+"/metrics")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			m[line[:i]] = line[i+1:]
		}
	}
	return m
}

func assertCacheEmpty(t *testing.T, a *agent.Agent) {
	t.Helper()
	root := a.Store().Root()
	for _, dir := range []string{"downloads", "blobs/sha256"} {
		ents, err := os.ReadDir(filepath.Join(root, dir))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("%s/ holds %d entries, want none", dir, len(ents))
		}
	}
}

func TestTrackerDownFallsBackToAnOrigin(t *testing.T) {
	c := start(t, 1)
	data, d := push(t, c, "test/fallback", 6<<20, 11)
	c.Stop(c.Tracker)
	a := c.Agents[0]
	// A HEAD asks an origin for the size, and downloads nothing.
	resp, _ := do(t, "HEAD", fmt.Sprintf("%s/v2/test/fallback/blobs/%s", a.URL(), d))
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("HEAD with the tracker down: %d, Content-Length %d", resp.StatusCode, resp.ContentLength)
	}
	if _, err := a.Store().Stat(d); err == nil {
		t.Fatal("a HEAD downloaded the blob")
	}
	resp, body := do(t, "GET", fmt.Sprintf("%s/v2/test/fallback/blobs/%s", a.URL(), d))
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET with the tracker down: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := metrics(t, a.AdminURL())[`shoal_agent_fallbacks_total{reason="tracker_unreachable"}`]; got != "1" {
		t.Errorf("fallback counter = %q, want 1", got)
	}
	testutil.Eventually(t, 10*time.Second, func() bool { _, err := a.Store().Stat(d); return err == nil },
		"blob not cached after the fallback (the commit follows the response)")
	// An unknown blob is still a clear 404, not a fallback loop.
	resp, body = do(t, "GET", fmt.Sprintf("%s/v2/test/fallback/blobs/%s", a.URL(), digest.FromString("none")))
	wantOCIError(t, resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
}
