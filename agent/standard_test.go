package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
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

// recorder keeps the messages of the records logged through it.
type recorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

func (r *recorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// A blob pulled along the sha256 chain gets its standard torrent from the
// origins' SHA-1s, not by hashing the stored blob again, after its pull and
// when built again; an agent that is stopping builds none (it hashed the
// blob at every stop before, to seed nothing).
func TestPulledBlobsStandardTorrentTakesTheOriginsSHA1s(t *testing.T) {
	const hashing = "hashing the stored blob for its standard torrent"
	rec := &recorder{}
	c, err := cluster.Start(cluster.Options{Dir: t.TempDir(), Agents: 1, Origins: 1, Log: slog.New(rec)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	const repo = "test/stdsha"
	data, d := push(t, c, repo, 3<<20+5, 23)
	a := c.Agents[0]
	if resp, body := do(t, "GET", fmt.Sprintf("%s/v2/%s/blobs/%s", a.URL(), repo, d)); resp.StatusCode != 200 || len(body) != len(data) {
		t.Fatalf("pull: %d, %d bytes", resp.StatusCode, len(body))
	}
	kept := a.Store().Path(d) + ".standard"
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := os.Stat(kept)
		return err == nil
	}, "no standard torrent kept beside the pulled blob")
	if n := rec.count(hashing); n != 0 {
		t.Fatalf("the pull hashed the blob %d times for its standard torrent", n)
	}

	raw, err := a.Store().ReadMeta(d, "torrent")
	if err != nil {
		t.Fatal(err)
	}
	mi, err := p2p.ParseMetaInfo(raw, d)
	if err != nil {
		t.Fatal(err)
	}
	lists, err := p2p.HashListsOf(bytes.NewReader(data), mi.Info.Length, mi.Info.PieceLength, p2p.HashChain)
	if err != nil {
		t.Fatal(err)
	}
	// Again, with the torrent gone: built from the origins' list.
	if err := os.Remove(kept); err != nil {
		t.Fatal(err)
	}
	agent.SeedPulled(a, repo, d, mi, lists[0])
	if _, err := os.Stat(kept); err != nil || rec.count(hashing) != 0 {
		t.Fatalf("standard torrent kept: %v; hashed the blob %d times", err, rec.count(hashing))
	}
	// A stopped agent builds nothing.
	if err := os.Remove(kept); err != nil {
		t.Fatal(err)
	}
	c.Stop(a)
	agent.SeedPulled(a, repo, d, mi, lists[0])
	if _, err := os.Stat(kept); !errors.Is(err, os.ErrNotExist) || rec.count(hashing) != 0 {
		t.Fatalf("a stopped agent: standard torrent kept (%v), hashed the blob %d times", err, rec.count(hashing))
	}
}
