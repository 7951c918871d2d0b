package cluster

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// TestPreheatBenchmark measures a preheat onto many agents: the time until
// SUCCESS, the origins' bytes sent in F (image size), and how soon an agent
// gets its first task. Run with SHOAL_PREHEAT_BENCH=N (agents, e.g. 32);
// skipped otherwise (it moves N x 64 MiB).
func TestPreheatBenchmark(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SHOAL_PREHEAT_BENCH"))
	if n <= 0 {
		t.Skip("set SHOAL_PREHEAT_BENCH=<agents> to measure")
	}
	conc, _ := strconv.Atoi(os.Getenv("SHOAL_PREHEAT_CONCURRENCY"))
	c := preheatCluster(t, n, Options{})
	img, err := localregistry.SampleImage(4, 16<<20, 21)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.Push(context.Background(), "bench/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	var size int64
	m, _ := img.Manifest()
	for _, l := range m.Layers {
		size += l.Size
	}
	size += m.Config.Size
	waitAgents(t, c, n)
	time.Sleep(3 * time.Second) // the build-index's settle time after its start
	pc := proto.PreheatClient{Token: adminToken}
	image := c.UpstreamHost + "/bench/app:v1"
	start := time.Now()
	id, err := pc.Create(context.Background(), c.BuildIndex.URL(), proto.PreheatRequest{Image: image,
		Scope: proto.Scope{Kind: proto.ScopeAllAgents}, Concurrency: conc})
	if err != nil {
		t.Fatal(err)
	}
	var originsDone, firstTask time.Duration
	for {
		j, err := pc.Job(context.Background(), c.BuildIndex.URL(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, nd := range j.Nodes {
			if nd.Role == "agent" && nd.State != proto.NodePending && firstTask == 0 {
				firstTask = time.Since(start)
			}
			if nd.Role == "agent" && originsDone == 0 {
				originsDone = time.Since(start)
			}
		}
		if j.Finished() {
			if j.State != proto.JobSuccess {
				t.Fatalf("job: %+v", j)
			}
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	took := time.Since(start)
	var sent int64
	for _, o := range c.Origins {
		sent += o.BytesSent() + o.BytesSentHTTP()
	}
	t.Logf("preheat of %d MiB onto %d agents (concurrency %d): SUCCESS in %s (origins phase %s, first agent task %s after the agents phase began); origins sent %.2f F; upstream sent %.2f F",
		size>>20, n, conc, took.Round(time.Millisecond), originsDone.Round(time.Millisecond), (firstTask - originsDone).Round(time.Microsecond),
		float64(sent)/float64(size), float64(c.Registry.BytesSent())/float64(size))
}
