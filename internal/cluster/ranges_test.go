package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
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
