package clienttest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
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
