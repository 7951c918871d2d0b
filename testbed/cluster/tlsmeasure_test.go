package cluster

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

func TestMeasureTLSOverhead(t *testing.T) {
	if os.Getenv("SHOAL_MEASURE_TLS") == "" {
		t.Skip("SKIP: set SHOAL_MEASURE_TLS=1")
	}
	const size = 64 << 20
	data := localregistry.RandomBytes(size, 99)
	for run := range 3 {
		for _, mode := range []string{"plain", "mtls"} {
			opts := Options{Agents: 1, Origins: 1}
			var src *tlsconf.Source
			if mode == "mtls" {
				ca := testutil.NewCA(t, "ca")
				f := newTLSFiles(t, ca.Issue(append([]string{"shoal"}, clusterIPs(1, 1)...)...), ca)
				opts.TLS = func(string, int) tlsconf.Config { return f.config() }
				var err error
				if src, err = tlsconf.New(f.config(), "tls", nil); err != nil {
					t.Fatal(err)
				}
			}
			c := startCluster(t, opts)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			d, err := c.Registry.PushBlob(ctx, "test/m", data)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			b, resp, err := get(ctx, fmt.Sprintf("%s/v2/test/m/blobs/%s", c.Agents[0].URL(), d))
			el := time.Since(start)
			cancel()
			if err != nil || resp.StatusCode != 200 || len(b) != size {
				t.Fatalf("%v %v", resp, err)
			}
			// The origin's HTTP API (the agents' fallback path), warm.
			hc := http.DefaultClient
			if mode == "mtls" {
				hc = &http.Client{Transport: src.Transport(&http.Transport{})}
			}
			start2 := time.Now()
			resp2, err := hc.Get(proto.BlobURL(c.Origins[0].URL(), "test/m", d))
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp2.Body)
			resp2.Body.Close()
			el2 := time.Since(start2)
			if n != size {
				t.Fatalf("origin sent %d", n)
			}
			t.Logf("run %d %s: cold 64 MiB pull through one agent %.3fs; warm 64 MiB GET from the origin's HTTP API %.3fs", run, mode, el.Seconds(), el2.Seconds())
			_ = c.Close()
		}
	}
}
