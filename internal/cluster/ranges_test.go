package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/internal/localregistry"
)

// rangeChunk asks for bytes=off- (open-ended, as containerd 2.x's parallel
// layer fetch does), reads n bytes and closes the connection.
func rangeChunk(ctx context.Context, url string, off, n int64) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	// A transport of its own: the connection closes with the chunk.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, resp.StatusCode, fmt.Errorf("%s: %s", resp.Status, b)
	}
	b := make([]byte, n)
	got, err := io.ReadFull(resp.Body, b)
	return b[:got], resp.StatusCode, err
}

// storm fetches the blob at url as chunks of chunk bytes, each on its own
// connection, all at once, in the order given; it returns the first
// failure.
func storm(ctx context.Context, url string, data []byte, chunk int64, order []int) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(order))
	for _, k := range order {
		wg.Go(func() {
			off := int64(k) * chunk
			n := min(chunk, int64(len(data))-off)
			b, _, err := rangeChunk(ctx, url, off, n)
			switch {
			case err != nil:
				errs <- fmt.Errorf("chunk %d: %w (%d bytes)", k, err, len(b))
			case !bytes.Equal(b, data[off:off+n]):
				errs <- fmt.Errorf("chunk %d: wrong bytes", k)
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func originBytes(c *Cluster) int64 {
	var n int64
	for _, o := range c.Origins {
		n += o.BytesSent() + o.BytesSentHTTP()
	}
	return n
}

// Many readers, one download: 64 clients ask a cold agent for a 64 MiB blob
// at once, each for bytes=k MiB- on a connection of its own, reading one
// MiB and closing, in shuffled order (containerd 2.x's parallel layer
// fetch, exaggerated). Every chunk is right, one download serves them all
// (origins send about 1 F), and the blob is cached whole after.
func TestRangeStormOnAColdBlob(t *testing.T) {
	const size, chunk = 64 << 20, 1 << 20
	c := startCluster(t, Options{Agents: 1, Origins: 2, PieceLength: 1 << 20})
	data := localregistry.RandomBytes(size, 64)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := c.Registry.PushBlob(ctx, "test/storm", data)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Agents[0]
	order := make([]int, size/chunk)
	for i := range order {
		order[i] = (i * 37) % len(order) // every chunk once, far apart
	}
	start := time.Now()
	if err := storm(ctx, fmt.Sprintf("%s/v2/test/storm/blobs/%s", a.URL(), d), data, chunk, order); err != nil {
		t.Fatal(err)
	}
	sent := originBytes(c)
	t.Logf("64 ranged chunks of a cold 64 MiB blob in %.2f s; origins sent %.2f F, upstream GETs %d",
		time.Since(start).Seconds(), float64(sent)/size, c.Registry.BlobGets(d.String()))
	if sent > size*11/10 {
		t.Errorf("origins sent %.2f F, want <= 1.1 F (one download for every reader)", float64(sent)/size)
	}
	if err := a.Store().WaitStored(ctx, d); err != nil {
		t.Fatalf("blob not cached after the storm: %v", err)
	}
}

// A pull that every client abandons half way is kept for pull_grace, or
// stopped; either way the next pull gets a 200 and the whole verified blob
// (never a 502 "already in the swarm").
func TestAbandonedPullThenPullAgain(t *testing.T) {
	for _, grace := range []time.Duration{10 * time.Millisecond, time.Minute} {
		t.Run(grace.String(), func(t *testing.T) {
			const size = 24 << 20
			// Origins at 4 MB/s: the first client leaves mid-transfer.
			c := startCluster(t, Options{Agents: 1, Origins: 1, OriginRate: 4e6, PieceLength: 1 << 20,
				AgentConfig: func(_ int, ac *agent.Config) { ac.PullGrace = grace }})
			data := localregistry.RandomBytes(size, 65)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			d, err := c.Registry.PushBlob(ctx, "test/abandon", data)
			if err != nil {
				t.Fatal(err)
			}
			url := fmt.Sprintf("%s/v2/test/abandon/blobs/%s", c.Agents[0].URL(), d)
			for range 3 {
				cctx, ccancel := context.WithCancel(ctx)
				b, _, err := rangeChunk(cctx, url, 0, 2<<20) // leaves after 2 MiB
				ccancel()
				if err != nil || !bytes.Equal(b, data[:2<<20]) {
					t.Fatalf("first 2 MiB: %v", err)
				}
			}
			body, resp, err := get(ctx, url)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("pull after abandoning: %v %v", err, resp)
			}
			if digest.FromBytes(body) != d {
				t.Fatalf("pull after abandoning: %d bytes that do not hash to %s", len(body), d)
			}
		})
	}
}
