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
	"github.com/shoal-dev/shoal/testbed/localregistry"
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

// Closed ranges, last first, all at once, on a cold blob: each is answered
// from the one download (a range far ahead of the in-order prefix gets its
// pieces when they are in, and asks the swarm for them first), every byte
// right, origins about 1 F.
func TestClosedRangesLastFirstOnAColdBlob(t *testing.T) {
	const size, chunk = 32 << 20, 1 << 20
	c := startCluster(t, Options{Agents: 1, Origins: 1, PieceLength: 1 << 20})
	data := localregistry.RandomBytes(size, 66)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := c.Registry.PushBlob(ctx, "test/closed", data)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("%s/v2/test/closed/blobs/%s", c.Agents[0].URL(), d)
	errs := make(chan error, size/chunk)
	for k := size/chunk - 1; k >= 0; k-- {
		go func() {
			off, end := int64(k)*chunk, int64(k+1)*chunk-1
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, end))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			switch {
			case err != nil:
				errs <- fmt.Errorf("range %d-%d: %w after %d bytes", off, end, err, len(b))
			case resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", off, end, size):
				errs <- fmt.Errorf("range %d-%d: %s, Content-Range %q", off, end, resp.Status, resp.Header.Get("Content-Range"))
			case !bytes.Equal(b, data[off:end+1]):
				errs <- fmt.Errorf("range %d-%d: wrong bytes", off, end)
			default:
				errs <- nil
			}
		}()
	}
	for range size / chunk {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if sent := originsSent(t, c); sent > size*11/10 {
		t.Errorf("origins sent %.2f F, want <= 1.1 F", float64(sent)/size)
	}
}
