package clienttest

import (
	"bufio"
	"context"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// sample is the image every test pulls: pushed to the cluster's upstream
// registry, known by its digests.
type sample struct {
	Repo, Tag string
	Manifest  v1.Hash   // manifest digest
	Config    v1.Hash   // config digest (Docker's image ID)
	Layers    []v1.Hash // layer digests (uncompressed tars: also the diff IDs)
	Bytes     int64     // config + layers
}

// startCluster starts an in-process cluster (1 agent, 2 origins, kernel-picked
// ports on 127.0.0.x) and pushes a 3-layer sample image to its upstream.
func startCluster(t *testing.T, repo string, seed uint64) (*cluster.Cluster, sample) {
	t.Helper()
	img, err := localregistry.SampleImage(3, 4<<20, seed)
	if err != nil {
		t.Fatal(err)
	}
	return startClusterWithImage(t, repo, img)
}

// startClusterWithImage is startCluster with the image to push.
func startClusterWithImage(t *testing.T, repo string, img v1.Image) (*cluster.Cluster, sample) {
	return startClusterWith(t, repo, img, nil)
}

// startClusterWith is startClusterWithImage with the cluster's options
// adjusted by adjust, if not nil.
func startClusterWith(t *testing.T, repo string, img v1.Image, adjust func(*cluster.Options)) (*cluster.Cluster, sample) {
	t.Helper()
	opts := cluster.Options{Dir: t.TempDir(), Agents: 1, Origins: 2, PieceLength: 1 << 20, Log: testutil.Logger(t)}
	if adjust != nil {
		adjust(&opts)
	}
	c, err := cluster.Start(opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := sample{Repo: repo, Tag: "v1"}
	if _, err := c.Registry.Push(ctx, s.Repo, s.Tag, img); err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	s.Manifest, _ = img.Digest()
	s.Config, s.Bytes = m.Config.Digest, m.Config.Size
	for _, l := range m.Layers {
		s.Layers = append(s.Layers, l.Digest)
		s.Bytes += l.Size
	}
	return c, s
}

// hostOf is "127.0.0.10:port" for "http://127.0.0.10:port".
func hostOf(u string) string { return strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://") }

// need skips the test unless every named program is on PATH.
func need(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("SKIP: %s is not installed (not on PATH): this test drives the real client", p)
		}
	}
}

// run runs a command with a deadline and returns its combined output,
// failing the test on error.
func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tryRun(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// metric reads one sample (name plus labels exactly as exposed, e.g.
// `shoal_agent_served_bytes_total`) from a Prometheus endpoint; 0 if absent.
func metric(t *testing.T, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics %s: %v", url, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == series {
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				t.Fatalf("metrics %s: %s: %v", url, series, err)
			}
			return v
		}
	}
	return 0
}
