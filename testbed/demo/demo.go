// Package demo is `shoal demo`: an all-in-one cluster on loopback with a
// built-in sample image, every agent pulling every layer at the same moment,
// and a report of where the bytes came from.
package demo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/procstat"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// Options for a demo run.
type Options struct {
	Dir       string
	Agents    int
	Origins   int
	Layers    int
	LayerSize config.ByteSize
	// Rates model a network: each agent's link, each origin's upload.
	AgentRate, OriginRate config.Rate
	PieceLength           config.ByteSize
	DefaultPorts          bool
	// UpstreamURL, if set, is the registry the cluster mirrors instead of
	// the built-in one (nothing is loaded into it).
	UpstreamURL string
	Log         *slog.Logger
}

// DefaultOptions is the embedded default: 8 agents, 2 origins, 3 x 32 MiB
// layers, 1 MiB pieces, links capped at 60 MB/s per agent and 30 MB/s per
// origin so that the swarm (not the 2-core CPU) sets the pace.
func DefaultOptions() Options {
	return Options{Agents: 8, Origins: 2, Layers: 3, LayerSize: 32 << 20,
		AgentRate: 60e6, OriginRate: 30e6, PieceLength: 1 << 20, DefaultPorts: true}
}

// Repo and Tag of the sample image in the demo's upstream.
const (
	Repo = "shoal/demo"
	Tag  = "latest"
)

// Report is what a run measured. Keys mean the same as in `shoal bench`.
type Report struct {
	Agents            int            `json:"agents"`
	Origins           int            `json:"origins"`
	Blobs             int            `json:"blobs"`
	BlobBytes         int64          `json:"blob_bytes"`
	UpstreamBlobGets  int            `json:"upstream_blob_gets"`
	UpstreamGetsBlob  map[string]int `json:"upstream_gets_per_blob"`
	BytesFromUpstream int64          `json:"bytes_from_upstream"`
	BytesFromOrigins  int64          `json:"bytes_from_origins"`
	BytesFromPeers    int64          `json:"bytes_from_peers"`
	AgentSecondsP50   float64        `json:"agent_seconds_p50"`
	AgentSecondsMax   float64        `json:"agent_seconds_max"`
	AgentSeconds      []float64      `json:"agent_seconds"`
	AllVerified       bool           `json:"all_verified"`
	Failures          []string       `json:"failures,omitempty"`
	CPUSeconds        float64        `json:"cpu_seconds"`
	PeakRSSBytes      int64          `json:"peak_rss_bytes"`
	WallSeconds       float64        `json:"wall_seconds"`
}

// Blob is one blob of the sample image.
type Blob struct {
	Digest digest.Digest
	Size   int64
}

// StartCluster brings up the cluster alone.
func StartCluster(opts Options) (*cluster.Cluster, error) {
	return cluster.Start(cluster.Options{
		Dir: opts.Dir, Agents: opts.Agents, Origins: opts.Origins, DefaultPorts: opts.DefaultPorts,
		AgentRate: opts.AgentRate, OriginRate: opts.OriginRate, PieceLength: opts.PieceLength,
		UpstreamURL: opts.UpstreamURL, Log: opts.Log,
	})
}

// Start brings up the cluster and loads the sample image into its upstream.
func Start(ctx context.Context, opts Options) (*cluster.Cluster, []Blob, error) {
	c, err := StartCluster(opts)
	if err != nil {
		return nil, nil, err
	}
	img, err := localregistry.SampleImage(opts.Layers, int64(opts.LayerSize), 1)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	if _, err := c.Registry.Push(ctx, Repo, Tag, img); err != nil {
		c.Close()
		return nil, nil, err
	}
	c.Registry.ResetCounts()
	m, err := img.Manifest()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	blobs := []Blob{{digest.Digest(m.Config.Digest.String()), m.Config.Size}}
	for _, l := range m.Layers {
		blobs = append(blobs, Blob{digest.Digest(l.Digest.String()), l.Size})
	}
	return c, blobs, nil
}

// Pull has every agent fetch every blob through its registry API at the same
// moment, verifying each body against its digest as it streams.
func Pull(ctx context.Context, c *cluster.Cluster, blobs []Blob) *Report {
	start := time.Now()
	cpu0 := procstat.CPUSeconds()
	r := &Report{Agents: len(c.Agents), Origins: len(c.Origins), Blobs: len(blobs), AllVerified: true,
		UpstreamGetsBlob: map[string]int{}, AgentSeconds: make([]float64, len(c.Agents))}
	for _, b := range blobs {
		r.BlobBytes += b.Size
	}
	var mu sync.Mutex
	fail := func(format string, args ...any) {
		mu.Lock()
		r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
		r.AllVerified = false
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for i, a := range c.Agents {
		wg.Go(func() {
			t0 := time.Now()
			var bw sync.WaitGroup
			for _, b := range blobs {
				bw.Go(func() {
					if err := fetchVerified(ctx, proto.V2BlobURL(a.URL(), Repo, b.Digest), b); err != nil {
						fail("agent %d: blob %s: %v", i, b.Digest, err)
					}
				})
			}
			bw.Wait()
			r.AgentSeconds[i] = time.Since(t0).Seconds()
		})
	}
	wg.Wait()
	r.WallSeconds = time.Since(start).Seconds()

	// Every agent's cached copy must hash to its digest too. A client has
	// the last byte once the digest matched; the commit (sync and rename)
	// follows, so wait for it, within a deadline.
	sctx, cancel := context.WithTimeout(ctx, commitDeadline)
	defer cancel()
	for i, a := range c.Agents {
		for _, b := range blobs {
			if err := a.Store().WaitStored(sctx, b.Digest); err != nil {
				fail("agent %d: blob %s not committed to the cache within %s: %v", i, b.Digest, commitDeadline, err)
				continue
			}
			f, err := a.Store().Open(b.Digest)
			if err != nil {
				fail("agent %d: blob %s not in cache: %v", i, b.Digest, err)
				continue
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != b.Digest.String() {
				fail("agent %d: cached blob %s does not match its digest", i, b.Digest)
			}
		}
		r.BytesFromOrigins += a.Node().BytesFromOrigins()
		r.BytesFromPeers += a.Node().BytesFromPeers()
	}
	for _, b := range blobs {
		n := c.Registry.BlobGets(b.Digest.String())
		r.UpstreamGetsBlob[b.Digest.String()] = n
		r.UpstreamBlobGets += n
	}
	r.BytesFromUpstream = c.Registry.BytesSent()
	sorted := slices.Clone(r.AgentSeconds)
	slices.Sort(sorted)
	r.AgentSecondsP50 = sorted[(len(sorted)-1)/2]
	r.AgentSecondsMax = sorted[len(sorted)-1]
	r.CPUSeconds = procstat.CPUSeconds() - cpu0
	r.PeakRSSBytes = procstat.PeakRSS()
	return r
}

// commitDeadline bounds the wait for every agent's commits after the pull.
const commitDeadline = 30 * time.Second

func fetchVerified(ctx context.Context, url string, b Blob) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s: %s", resp.Status, body)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return fmt.Errorf("after %d bytes: %w", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != b.Digest.String() || n != b.Size {
		return fmt.Errorf("got %d bytes hashing to %s", n, got)
	}
	return nil
}
