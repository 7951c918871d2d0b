package tracker_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/tracker"
)

// BenchmarkAnnounce drives the tracker's full handler (router, request log,
// parsing, memory store, encoding) with announces of 1000 peers over 16
// swarms. Run with -cpu 1 for the one-core figure.
func BenchmarkAnnounce(b *testing.B) {
	benchAnnounce(b, tracker.Config{Listen: "127.0.0.1:0"})
}

// BenchmarkAnnounceRedis is BenchmarkAnnounce on the Redis peer store (a
// local redis-server): one round trip per announce.
func BenchmarkAnnounceRedis(b *testing.B) {
	redis := testutil.StartRedis(b)
	benchAnnounce(b, tracker.Config{Listen: "127.0.0.1:0", PeerStore: tracker.PeerStoreRedis,
		Redis: tracker.RedisConfig{Addr: redis.Addr}})
}

func benchAnnounce(b *testing.B, cfg tracker.Config) {
	srv, err := tracker.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	h := srv.Handler()
	reqs := make([]*http.Request, 1000)
	for i := range reqs {
		var ih, id [20]byte
		copy(ih[:], fmt.Sprintf("swarm-%014d", i%16))
		copy(id[:], fmt.Sprintf("-SH0001-%012d", i))
		q := url.Values{}
		q.Set("info_hash", string(ih[:]))
		q.Set("peer_id", string(id[:]))
		q.Set("port", "6881")
		q.Set("uploaded", "0")
		q.Set("downloaded", "0")
		q.Set("left", fmt.Sprint((i%4)*1000)) // a quarter are seeders
		q.Set("compact", "1")
		reqs[i] = httptest.NewRequest(http.MethodGet, "/announce?"+q.Encode(), nil)
		reqs[i].RemoteAddr = fmt.Sprintf("10.0.%d.%d:6881", i/256, i%256)
	}
	b.ReportAllocs()
	lat := make([]time.Duration, 0, 1<<20)
	i := 0
	for b.Loop() {
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeHTTP(rec, reqs[i%len(reqs)])
		if len(lat) < cap(lat) {
			lat = append(lat, time.Since(start))
		}
		if rec.Code != http.StatusOK || rec.Body.Len() < 50 || rec.Body.Bytes()[2] == 'f' {
			b.Fatalf("announce: %d %q", rec.Code, rec.Body.Bytes())
		}
		i++
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "announces/s")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
}
