package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// TestRangeStormOnAColdBlob does without containerd what containerd 2.x's
// transfer service does with concurrent_layer_fetch_buffer set: it asks a
// cold agent for every 1 MiB chunk of a 64 MiB blob, each as an open-ended
// `Range: bytes=N-` request on its own connection, reads exactly the chunk
// and closes the connection. All 64 at once, and a few at a time in order
// as containerd's workers take them (then a chunk's client may leave before
// the next one asks). Every chunk must be the blob's bytes, the origins must
// send the blob about once, and afterwards the agent must serve the whole
// blob.
func TestRangeStormOnAColdBlob(t *testing.T) {
	for _, parallel := range []int{64, 4} {
		t.Run(fmt.Sprintf("%d_at_a_time", parallel), func(t *testing.T) { testRangeStorm(t, parallel) })
	}
}

func testRangeStorm(t *testing.T, parallel int) {
	const (
		size  = 64 << 20
		chunk = 1 << 20
	)
	c := startCluster(t, Options{Agents: 1, Origins: 2, PieceLength: 1 << 20})
	data := localregistry.RandomBytes(size, uint64(64+parallel))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d, err := c.Registry.PushBlob(ctx, "test/storm", data)
	if err != nil {
		t.Fatal(err)
	}
	c.Registry.ResetCounts()
	url := fmt.Sprintf("%s/v2/test/storm/blobs/%s", c.Agents[0].URL(), d)

	start := time.Now()
	res := rangeStorm(ctx, url, data, chunk, parallel)
	elapsed := time.Since(start)

	statuses := map[string]int{}
	var bad []string
	for _, r := range res {
		statuses[r.status]++
		if r.err != nil {
			bad = append(bad, fmt.Sprintf("chunk %d (Range: bytes=%d-): %s, %d bytes read: %v", r.k, r.k*chunk, r.status, r.n, r.err))
		}
	}
	t.Logf("%d ranged requests, %d at a time, in %s; statuses: %v", len(res), parallel, elapsed.Round(time.Millisecond), statuses)
	if len(bad) > 0 {
		t.Errorf("%d of %d chunks wrong:\n%s", len(bad), len(res), strings.Join(bad, "\n"))
	}

	sent := originsSent(t, c)
	t.Logf("origins sent %.1f MiB (%.2f F); upstream blob GETs %d, upstream sent %.1f MiB; agent pulls: %s; fallbacks: %s",
		float64(sent)/(1<<20), float64(sent)/size, c.Registry.BlobGets(d.String()), float64(c.Registry.BytesSent())/(1<<20),
		metricLine(t, c.Agents[0].AdminURL(), "shoal_agent_pulls_total"), metricLine(t, c.Agents[0].AdminURL(), "shoal_agent_fallbacks_total"))
	if sent > size*11/10 {
		t.Errorf("origins sent %d bytes (%.2f F), want at most 1.1 F", sent, float64(sent)/size)
	}

	// The storm must leave the agent able to serve the blob: whole, verified.
	body, resp, err := get(ctx, url)
	switch {
	case err != nil:
		t.Errorf("GET of the whole blob after the storm: %v (%d bytes)", err, len(body))
	case resp.StatusCode != http.StatusOK:
		t.Errorf("GET of the whole blob after the storm: %s: %.300s", resp.Status, body)
	case !bytes.Equal(body, data):
		t.Errorf("GET of the whole blob after the storm: %d bytes that do not match the blob", len(body))
	}
}

// chunkResult is what one ranged request of a storm got.
type chunkResult struct {
	k      int64  // chunk index
	status string // HTTP status, or "no answer"
	n      int    // body bytes read
	err    error  // nil when the chunk matched the blob
}

// rangeStorm asks for every chunk of data, each as `Range: bytes=k*chunk-`
// on a connection of its own, parallel requests at a time (taken in order,
// as containerd's chunk workers do; parallel <= 0: all at once). Each reads
// exactly its chunk (less for the last), checks it against data and closes
// the connection without reading the rest of the open-ended answer.
func rangeStorm(ctx context.Context, url string, data []byte, chunk int64, parallel int) []chunkResult {
	size := int64(len(data))
	n := (size + chunk - 1) / chunk
	if parallel <= 0 || int64(parallel) > n {
		parallel = int(n)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	res := make([]chunkResult, n)
	next := make(chan int64, n)
	for k := range n {
		next <- k
	}
	close(next)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for k := range next {
				off := k * chunk
				res[k] = fetchChunk(ctx, client, url, data[off:min(off+chunk, size)], off, size)
				res[k].k = k
			}
		})
	}
	wg.Wait()
	return res
}

func fetchChunk(ctx context.Context, client *http.Client, url string, want []byte, off, size int64) chunkResult {
	r := chunkResult{status: "no answer"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	resp, err := client.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close() // closes the connection: the rest is never read
	r.status = strconv.Itoa(resp.StatusCode)
	if resp.StatusCode != http.StatusPartialContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		r.err = fmt.Errorf("want 206: %q", b)
		return r
	}
	if cr, wantCR := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", off, size-1, size); cr != wantCR {
		r.err = fmt.Errorf("Content-Range %q, want %q", cr, wantCR)
		return r
	}
	got := make([]byte, len(want))
	r.n, err = io.ReadFull(resp.Body, got)
	if err != nil {
		r.err = fmt.Errorf("body cut short: %w", err)
		return r
	}
	if !bytes.Equal(got, want) {
		r.err = fmt.Errorf("bytes differ from the blob at offset %d", off+firstDiff(got, want))
	}
	return r
}

func firstDiff(a, b []byte) int64 {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return int64(i)
		}
	}
	return int64(min(len(a), len(b)))
}

// originsSent is what the origins sent in all: pieces to peers, and blob
// bytes over HTTP (the agents' fallback).
func originsSent(t *testing.T, c *Cluster) int64 {
	t.Helper()
	var n int64
	for _, o := range c.Origins {
		n += o.BytesSent()
		line := metricLine(t, o.URL(), "shoal_origin_http_blob_bytes_total")
		if f := strings.Fields(line); len(f) == 2 {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("origin metrics: %q: %v", line, err)
			}
			n += int64(v)
		}
	}
	return n
}
