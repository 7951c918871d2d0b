package agent_test

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/cluster"
)

// trackerTorrent is the standard torrent the tracker hands out for d.
func trackerTorrent(t *testing.T, c *cluster.Cluster, repo string, d digest.Digest) *p2p.MetaInfo {
	t.Helper()
	resp, body := do(t, "GET", fmt.Sprintf("%s/namespace/%s/blobs/%s/torrent", c.Tracker.URL(), url.PathEscape(repo), d))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("tracker torrent: %d %q", resp.StatusCode, body)
	}
	std, err := p2p.ParseStandard(body, d)
	if err != nil {
		t.Fatal(err)
	}
	return std
}

// An agent that pulled a blob seeds its standard torrent under the same
// info-hash as the origin (built from the piece hashes the pull checked);
// after a restart it seeds it again on the next cache hit, from the torrent
// kept beside the blob, or, when that is gone, from the hashes of its
// verified copy.
func TestAgentSeedsTheStandardTorrent(t *testing.T) {
	c := start(t, 1)
	data, d := push(t, c, "test/std", 5<<20+3, 21)
	u := fmt.Sprintf("%s/v2/test/std/blobs/%s", c.Agents[0].URL(), d)
	if resp, body := do(t, "GET", u); resp.StatusCode != 200 || len(body) != len(data) {
		t.Fatalf("pull: %d, %d bytes", resp.StatusCode, len(body))
	}
	want := trackerTorrent(t, c, "test/std", d)
	seeds := func(a *agent.Agent) func() bool {
		return func() bool {
			sw := a.Node().StandardSwarm(d.String())
			return sw != nil && sw.MetaInfo().InfoHash == want.InfoHash && sw.Complete()
		}
	}
	testutil.Eventually(t, 10*time.Second, seeds(c.Agents[0]), "the agent does not seed the standard torrent %s after its pull", want.InfoHash)
	if sw := c.Agents[0].Node().Swarm(d.String()); sw == nil {
		t.Fatal("the agent left the live swarm")
	}

	for _, kept := range []bool{true, false} {
		t.Run(fmt.Sprintf("restart, torrent kept %v", kept), func(t *testing.T) {
			if !kept {
				p := c.Agents[0].Store().Path(d) + ".standard"
				if err := os.Remove(p); err != nil {
					t.Fatalf("the agent kept no standard torrent beside the blob: %v", err)
				}
			}
			a, err := c.RestartAgent(0)
			if err != nil {
				t.Fatal(err)
			}
			if resp, _ := do(t, "GET", fmt.Sprintf("%s/v2/test/std/blobs/%s", a.URL(), d)); resp.StatusCode != 200 {
				t.Fatalf("cache hit after restart: %d", resp.StatusCode)
			}
			testutil.Eventually(t, 10*time.Second, seeds(a), "the restarted agent does not seed the standard torrent")
			if _, err := os.Stat(filepath.Join(a.Store().Path(d) + ".standard")); err != nil {
				t.Errorf("no standard torrent kept beside the blob: %v", err)
			}
		})
	}
}
