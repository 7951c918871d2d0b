package bench

import (
	"bytes"
	"context"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/testbed/localregistry"
)

func TestTMin(t *testing.T) {
	const mb = 1e6
	for _, tc := range []struct {
		n             int
		f, u, uo, uup float64
		cold          bool
		want          float64
	}{
		// One agent: its own link or the origin bounds it.
		{1, 100 * mb, 10 * mb, 10 * mb, 10 * mb, false, 10},
		// Many agents with an equal origin: N*F/(U+N*u) is close to F/u.
		{8, 256 * mb, 25 * mb, 25 * mb, 25 * mb, false, 8 * 256 / (25 + 8*25.0)},
		// A slow origin bounds everyone.
		{8, 100 * mb, 100 * mb, 1 * mb, 1 * mb, false, 100},
		// Cold origins also wait for a slower upstream.
		{2, 100 * mb, 10 * mb, 10 * mb, 5 * mb, true, 20},
	} {
		got := TMin(tc.n, tc.f, tc.u, tc.uo, tc.uup, tc.cold)
		want := max(tc.want, tc.f/tc.u)
		if math.Abs(got-want) > 1e-9 {
			t.Errorf("TMin(%+v) = %v, want %v", tc, got, want)
		}
	}
}

func TestSmallSwarmRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Swarm(ctx, SwarmOptions{Agents: 3, Size: 6 << 20, PieceSize: 1 << 20, Rate: 20e6, Baseline: "direct", Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if !r.AllVerified || len(r.Failures) > 0 {
		t.Fatalf("failures: %v", r.Failures)
	}
	if r.UpstreamBlobGets != 1 || r.BytesFromUpstream < 6<<20 {
		t.Errorf("upstream: %d GETs, %d bytes", r.UpstreamBlobGets, r.BytesFromUpstream)
	}
	// Nothing can beat the physical bound (allow the token buckets' burst).
	if r.AgentSecondsP50 < 0.8*r.TMinSeconds || r.P50OverTMin <= 0 {
		t.Errorf("p50 %.2fs vs T_min %.2fs: faster than physics, the caps are not applied", r.AgentSecondsP50, r.TMinSeconds)
	}
	if r.BytesFromOrigins+r.BytesFromPeers < 3*6<<20 {
		t.Errorf("agents received %d+%d bytes over P2P, less than 3 blobs", r.BytesFromOrigins, r.BytesFromPeers)
	}
	if r.DirectSecondsP50 <= 0 || r.SpeedupP50 <= 0 {
		t.Errorf("direct baseline missing: %+v", r)
	}
	if r.CPUSeconds <= 0 || r.PeakRSSBytes <= 0 {
		t.Errorf("cpu %v, rss %v", r.CPUSeconds, r.PeakRSSBytes)
	}
	svg := SVG(&Results{Swarm: []*SwarmResult{r, r}})
	if strings.Count(svg, `font-weight="bold"`) != 2 || !strings.Contains(svg, ">T_min ") || !strings.HasPrefix(svg, "<svg") {
		t.Errorf("plot lacks its panels:\n%s", svg)
	}
}

// pullAll fails a copy that differs from the blob by one byte or is short.
func TestPullAllChecksEveryCopy(t *testing.T) {
	const size = 1 << 20
	want, err := randomBlobCheck(size, 1)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(localregistry.NewRandomReader(size, 1))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(blob)
	bad[size/2] ^= 1
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/good":
			w.Write(blob)
		case "/flipped":
			w.Write(bad)
		case "/short":
			w.Write(blob[:size-1])
		}
	}))
	defer srv.Close()
	paths := []string{"/good", "/flipped", "/short"}
	_, _, fails := pullAll(context.Background(), len(paths), func(i int) string { return srv.URL + paths[i] }, want, 0)
	if len(fails) != 2 || !strings.Contains(strings.Join(fails, " "), "client 1") || !strings.Contains(strings.Join(fails, " "), "client 2") {
		t.Fatalf("fails = %q, want clients 1 (flipped byte) and 2 (short)", fails)
	}
}
