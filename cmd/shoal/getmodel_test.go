package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoal-dev/shoal/internal/procstat"
	"github.com/shoal-dev/shoal/testbed/cluster"
)

// runMainEnv makes the test binary run shoal's main instead of the tests, so
// a test can measure a real `shoal get` process (its peak RSS).
const runMainEnv = "SHOAL_TEST_RUN_MAIN"

// peakRSSFileEnv names a file where that run writes its own peak RSS when it
// ends. The rusage its parent gets (ru_maxrss) holds the test process's peak
// too: Linux keeps the high-water mark of the memory a process had before its
// exec, and os/exec's child had the test process's.
const peakRSSFileEnv = "SHOAL_TEST_PEAK_RSS_FILE"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		code := run(os.Args[1:], os.Stdout, os.Stderr)
		if f := os.Getenv(peakRSSFileEnv); f != "" {
			if err := os.WriteFile(f, []byte(strconv.FormatInt(procstat.PeakRSS(), 10)), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				code = 1
			}
		}
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// ModelPack (CNCF model-spec) media types.
const (
	modelArtifactType = "application/vnd.cncf.model.manifest.v1+json"
	modelConfigType   = "application/vnd.cncf.model.config.v1+json"
	modelWeightRaw    = "application/vnd.cncf.model.weight.v1.raw"
)

type rawManifest struct {
	body []byte
	mt   types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.body, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// TestGetModelArtifact1GiB fetches a ModelPack model whose weights are one
// uncompressed 1 GiB layer, in a separate `shoal get` process, and checks
// that its memory stays flat: the peak RSS is a small fraction of the layer.
func TestGetModelArtifact1GiB(t *testing.T) {
	const weightSize = 1 << 30
	const maxRSS = 160 << 20 // the process, not the layer: runtime + buffers
	c, err := cluster.Start(cluster.Options{Dir: t.TempDir(), Agents: 1, Origins: 1, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("cluster close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	const repo = "models/tiny-llm"
	cfg := []byte(`{"descriptor":{"family":"test"},"config":{"format":"safetensors","paramSize":"0.5B"},"modelfs":{"type":"layers","diffIds":[]}}`)
	cfgDigest, err := c.Registry.PushBlob(ctx, repo, cfg)
	if err != nil {
		t.Fatal(err)
	}
	weights, err := c.Registry.PushRandomBlob(ctx, repo, weightSize, 42)
	if err != nil {
		t.Fatal(err)
	}
	m := ocispec.Manifest{
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: modelArtifactType,
		Config:       ocispec.Descriptor{MediaType: modelConfigType, Digest: cfgDigest, Size: int64(len(cfg))},
		Layers: []ocispec.Descriptor{{
			MediaType:   modelWeightRaw,
			Digest:      weights,
			Size:        weightSize,
			Annotations: map[string]string{"org.cncf.model.filepath": "model.safetensors"},
		}},
	}
	m.SchemaVersion = 2
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(c.Registry.Host()+"/"+repo+":v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(tag, rawManifest{body, types.OCIManifestSchema1}, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, os.Args[0], "get", "--agent", c.Agents[0].URL(), "-o", dir, tag.String())
	rssFile := filepath.Join(t.TempDir(), "peak-rss")
	cmd.Env = append(os.Environ(), runMainEnv+"=1", peakRSSFileEnv+"="+rssFile)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("shoal get: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	took := time.Since(start)
	b, err := os.ReadFile(rssFile)
	if err != nil {
		t.Fatalf("the shoal get process's peak RSS: %v", err)
	}
	rss, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || rss <= 0 {
		t.Fatalf("the shoal get process's peak RSS: %q", b)
	}
	t.Logf("shoal get of a %d MiB model: %s, peak RSS %.1f MiB", weightSize>>20, took.Round(time.Millisecond), float64(rss)/(1<<20))
	if rss > maxRSS {
		t.Errorf("peak RSS %d MiB for a %d MiB layer: memory is not flat (want <= %d MiB)", rss>>20, weightSize>>20, maxRSS>>20)
	}

	n, roots := verifyLayout(t, dir)
	if n != 3 || len(roots) != 1 || roots[0].ArtifactType != modelArtifactType {
		t.Fatalf("layout: %d blobs, roots %+v; want the manifest, its config and the weights", n, roots)
	}
	p := filepath.Join(dir, "blobs", "sha256", weights.Encoded())
	fi, err := os.Stat(p)
	if err != nil || fi.Size() != weightSize {
		t.Fatalf("weights: %v, %v", fi, err)
	}
	if want := fmt.Sprintf("%s %s -> %s", ocispec.MediaTypeImageManifest, digest.FromBytes(body), dir); !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
	}
}
