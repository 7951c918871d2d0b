package clienttest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// TestDockerPull: the host's Docker engine pulls a multi-layer image by tag
// straight from an agent (Docker allows plain HTTP to 127.0.0.0/8), and the
// image it stores has the sample's config digest, diff IDs and manifest
// digest.
func TestDockerPull(t *testing.T) {
	need(t, "docker")
	if out, err := tryRun(20*time.Second, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("SKIP: no Docker engine answers (docker info: %v): %s", err, out)
	}
	c, s := startCluster(t, "clienttest/docker", 101)
	a := c.Agents[0]
	ref := fmt.Sprintf("%s/%s:%s", hostOf(a.URL()), s.Repo, s.Tag)
	_, _ = tryRun(time.Minute, "docker", "rmi", "-f", ref) // a stale copy would hide a broken pull
	t.Cleanup(func() { _, _ = tryRun(time.Minute, "docker", "rmi", "-f", ref) })

	start := time.Now()
	run(t, 2*time.Minute, "docker", "pull", ref)
	t.Logf("docker pull %s: %.2fs", ref, time.Since(start).Seconds())

	var inspect []struct {
		ID          string `json:"Id"`
		RepoDigests []string
		RootFS      struct{ Layers []string }
	}
	out := run(t, time.Minute, "docker", "image", "inspect", ref)
	if err := json.Unmarshal([]byte(out), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("docker image inspect %s: %v\n%s", ref, err, out)
	}
	got := inspect[0]
	if got.ID != s.Config.String() {
		t.Errorf("image ID %s, want the config digest %s", got.ID, s.Config)
	}
	var want []string
	for _, l := range s.Layers {
		want = append(want, l.String())
	}
	if !slices.Equal(got.RootFS.Layers, want) {
		t.Errorf("diff IDs %v, want %v", got.RootFS.Layers, want)
	}
	if wantRD := fmt.Sprintf("%s/%s@%s", hostOf(a.URL()), s.Repo, s.Manifest); !slices.Contains(got.RepoDigests, wantRD) {
		t.Errorf("repo digests %v, want %s among them", got.RepoDigests, wantRD)
	}
	if served := metric(t, a.AdminURL()+"/metrics", "shoal_agent_served_bytes_total"); served < float64(s.Bytes) {
		t.Errorf("agent served %.0f blob bytes, want at least the image's %d", served, s.Bytes)
	}
}

// TestDockerPullMultiArch: a multi-arch index by tag. Docker picks this
// host's platform through the agent, and the other platform's layers never
// leave the upstream.
func TestDockerPullMultiArch(t *testing.T) {
	need(t, "docker")
	if out, err := tryRun(20*time.Second, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("SKIP: no Docker engine answers (docker info: %v): %s", err, out)
	}
	c, _ := startCluster(t, "clienttest/multi", 301)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	amd, err := localregistry.SampleImage(2, 2<<20, 302)
	if err != nil {
		t.Fatal(err)
	}
	arm, err := localregistry.SampleImage(2, 2<<20, 303)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := localregistry.Index(map[string]v1.Image{"amd64": amd, "arm64": arm})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.PushIndex(ctx, "clienttest/multi", "v2", idx); err != nil {
		t.Fatal(err)
	}
	c.Registry.ResetCounts()

	ref := fmt.Sprintf("%s/clienttest/multi:v2", hostOf(c.Agents[0].URL()))
	_, _ = tryRun(time.Minute, "docker", "rmi", "-f", ref)
	t.Cleanup(func() { _, _ = tryRun(time.Minute, "docker", "rmi", "-f", ref) })
	run(t, 2*time.Minute, "docker", "pull", "--platform", "linux/amd64", ref)

	var inspect []struct {
		ID           string `json:"Id"`
		Architecture string
	}
	out := run(t, time.Minute, "docker", "image", "inspect", ref)
	if err := json.Unmarshal([]byte(out), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("docker image inspect %s: %v\n%s", ref, err, out)
	}
	wantCfg, _ := amd.ConfigName()
	if inspect[0].ID != wantCfg.String() || inspect[0].Architecture != "amd64" {
		t.Errorf("pulled %s (%s), want the amd64 image %s", inspect[0].ID, inspect[0].Architecture, wantCfg)
	}
	armLayers, _ := arm.Layers()
	for _, l := range armLayers {
		d, _ := l.Digest()
		if n := c.Registry.BlobGets(d.String()); n != 0 {
			t.Errorf("arm64 layer %s fetched %d times from upstream", d, n)
		}
	}
	amdLayers, _ := amd.Layers()
	for _, l := range amdLayers {
		d, _ := l.Digest()
		if n := c.Registry.BlobGets(d.String()); n != 1 {
			t.Errorf("amd64 layer %s fetched %d times from upstream, want 1", d, n)
		}
	}
}
