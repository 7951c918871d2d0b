package tracker_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/tracker/shared"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/tracker"
)

// redisConfig is a tracker config on the Redis at addr, under a key prefix
// of the test's own.
func redisConfig(t *testing.T, addr string) tracker.Config {
	return tracker.Config{
		PeerStore: tracker.PeerStoreRedis,
		Redis:     tracker.RedisConfig{Addr: addr, KeyPrefix: "test:" + t.Name() + ":", OpTimeout: 500 * time.Millisecond},
	}
}

// get fetches url and returns its status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Two replicas on one Redis are one tracker to their clients: a peer that
// announced to A is handed out by B, and leaving through B empties A's view.
func TestRedisReplicasSharePeers(t *testing.T) {
	redis := testutil.StartRedis(t)
	cfg := redisConfig(t, redis.Addr)
	a, b := startTracker(t, cfg), startTracker(t, cfg)
	ih := infoHash("blob-shared")

	seeder := newPeer(t, a, "seeder", 6001)
	if resp := seeder.mustAnnounce(ih, 0, shared.Started); resp.Seeders != 1 || len(resp.Peers) != 0 {
		t.Fatalf("seeder's announce to A: %+v", resp)
	}
	resp := newPeer(t, b, "leecher", 6002).mustAnnounce(ih, 100, shared.Started)
	if got := ports(resp); len(got) != 1 || got[0] != 6001 || resp.Seeders != 1 || resp.Leechers != 1 {
		t.Fatalf("B answered ports %v seeders %d leechers %d; want A's seeder 6001, (1, 1)", got, resp.Seeders, resp.Leechers)
	}
	if status, _ := get(t, b.URL()+"/readiness"); status != http.StatusOK {
		t.Fatalf("B readiness = %d with Redis up", status)
	}

	newPeer(t, b, "seeder", 6001).mustAnnounce(ih, 0, shared.Stopped) // same peer id, other replica
	resp = newPeer(t, a, "asker", 6003).mustAnnounce(ih, 100, shared.None)
	if got := ports(resp); len(got) != 1 || got[0] != 6002 || resp.Seeders != 0 {
		t.Fatalf("after the seeder stopped via B, A answered ports %v seeders %d; want [6002], 0", got, resp.Seeders)
	}
}

// Redis going away fails announces promptly with a failure reason and turns
// /readiness to 503; Redis coming back heals both, with no restart.
func TestRedisOutageAndRecovery(t *testing.T) {
	redis := testutil.StartRedis(t)
	srv := startTracker(t, redisConfig(t, redis.Addr))
	ih := infoHash("blob-outage")
	p := newPeer(t, srv, "p", 6001)
	p.mustAnnounce(ih, 100, shared.Started)

	redis.Kill()
	for range 3 { // repeated: no call may hang on a half-dead connection
		start := time.Now()
		_, err := p.announce(ih, 100, shared.None)
		if err == nil || !strings.Contains(err.Error(), "peer store unavailable") {
			t.Fatalf("announce with Redis down: %v; want failure reason \"peer store unavailable\"", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("failing announce took %s", d)
		}
	}
	start := time.Now()
	if status, body := get(t, srv.URL()+"/readiness"); status != http.StatusServiceUnavailable {
		t.Fatalf("readiness with Redis down = %d %q, want 503", status, body)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("readiness took %s", d)
	}
	if _, metrics := get(t, srv.URL()+"/metrics"); !strings.Contains(metrics, `shoal_tracker_peer_store_errors_total{op="announce"} 3`) ||
		!strings.Contains(metrics, `shoal_tracker_peer_store_errors_total{op="ping"} 1`) {
		t.Errorf("metrics do not count the store errors:\n%s", grepLines(metrics, "peer_store_errors"))
	}

	redis.Restart() // empty: the swarm is rebuilt by the next announces
	testutil.Eventually(t, 10*time.Second, func() bool {
		_, err := p.announce(ih, 100, shared.None)
		return err == nil
	}, "announces still failing after Redis came back")
	testutil.Eventually(t, 10*time.Second, func() bool {
		status, _ := get(t, srv.URL()+"/readiness")
		return status == http.StatusOK
	}, "readiness not back to 200 after Redis came back")
	resp := newPeer(t, srv, "q", 6002).mustAnnounce(ih, 100, shared.Started)
	if got := ports(resp); len(got) != 1 || got[0] != 6001 || resp.Leechers != 2 {
		t.Fatalf("after recovery: ports %v leechers %d; want [6001], 2", got, resp.Leechers)
	}
}

// The password is sent (the right one works), and a wrong one fails
// announces, shows in logs and readiness, while the password itself appears
// nowhere.
func TestRedisPassword(t *testing.T) {
	const right, secret = "correct-horse", "hunter2-do-not-print"
	redis := testutil.StartRedis(t, "--requirepass", right)
	cfg := redisConfig(t, redis.Addr)
	cfg.Redis.Password = right
	newPeer(t, startTracker(t, cfg), "p", 6001).mustAnnounce(infoHash("blob-auth"), 100, shared.Started)

	cfg.Redis.Password = secret
	cfg.Listen = "127.0.0.1:0"
	var logs testutil.LogBuffer
	srv, err := tracker.New(cfg, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("tracker Run: %v", err)
		}
	})

	_, err = newPeer(t, srv, "p", 6001).announce(infoHash("blob-auth"), 100, shared.Started)
	if err == nil || !strings.Contains(err.Error(), "peer store unavailable") {
		t.Fatalf("announce with a bad password: %v", err)
	}
	status, body := get(t, srv.URL()+"/readiness")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("readiness = %d, want 503", status)
	}
	for what, text := range map[string]string{"error": err.Error(), "readiness": body, "logs": logs.String()} {
		if strings.Contains(text, secret) {
			t.Errorf("the Redis password appears in the %s: %s", what, text)
		}
	}
	if !strings.Contains(logs.String(), "peer store") {
		t.Errorf("the store error was not logged: %s", logs.String())
	}
}

func grepLines(text, substr string) string {
	var out []string
	for line := range strings.SplitSeq(text, "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return fmt.Sprint(out)
}
