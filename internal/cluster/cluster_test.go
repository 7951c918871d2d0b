package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/localregistry"
)

func testLog(t *testing.T) *slog.Logger {
	if os.Getenv("SHOAL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func startCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	opts.Dir = t.TempDir()
	opts.Log = testLog(t)
	c, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("cluster close: %v", err)
		}
	})
	return c
}

func get(ctx context.Context, url string) ([]byte, *http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return b, resp, err
}

func TestEightAgentsPullOneBlobThroughTheSwarm(t *testing.T) {
	const size = 64 << 20
	c := startCluster(t, Options{Agents: 8, Origins: 2, OriginRate: 40e6, AgentRate: 80e6})
	data := localregistry.RandomBytes(size, 42)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d, err := c.Registry.PushBlob(ctx, "test/big", data)
	if err != nil {
		t.Fatal(err)
	}
	c.Registry.ResetCounts()
	want := sha256.Sum256(data)

	var wg sync.WaitGroup
	errs := make([]error, len(c.Agents))
	for i, a := range c.Agents {
		wg.Go(func() {
			b, resp, err := get(ctx, fmt.Sprintf("%s/v2/test/big/blobs/%s", a.URL(), d))
			switch {
			case err != nil:
				errs[i] = err
			case resp.StatusCode != http.StatusOK:
				errs[i] = fmt.Errorf("status %s: %s", resp.Status, b)
			case sha256.Sum256(b) != want || !bytes.Equal(b, data):
				errs[i] = fmt.Errorf("got %d bytes that do not match", len(b))
			case resp.Header.Get("Docker-Content-Digest") != d.String():
				errs[i] = fmt.Errorf("Docker-Content-Digest = %q", resp.Header.Get("Docker-Content-Digest"))
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("agent %d: %v", i, err)
		}
	}
	if n := c.Registry.BlobGets(d.String()); n != 1 {
		t.Errorf("upstream saw %d GETs of the blob, want exactly 1", n)
	}
	var fromOrigins, fromPeers, originSent int64
	for _, a := range c.Agents {
		fromOrigins += a.Node().BytesFromOrigins()
		fromPeers += a.Node().BytesFromPeers()
	}
	for _, o := range c.Origins {
		originSent += o.Node().BytesSent()
	}
	t.Logf("origins sent %d MiB (%.2f F); agents got %d MiB from origins, %d MiB from peers",
		originSent>>20, float64(originSent)/size, fromOrigins>>20, fromPeers>>20)
	if originSent >= 8*size {
		t.Errorf("origins sent %d bytes, want less than 8 x %d (the rest from peers)", originSent, size)
	}
	if fromPeers == 0 {
		t.Errorf("no bytes came from peers")
	}
	for i, a := range c.Agents {
		if _, err := a.Store().Stat(d); err != nil {
			t.Errorf("agent %d did not cache the blob: %v", i, err)
		}
	}
}
