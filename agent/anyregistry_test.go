package agent_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/upstream"
)

// Every origin down, and the namespace names a registry the agent's own
// [[upstream]] (its last resort) does not: still an outage, 502
// UNAVAILABLE, saying the last resort has no entry for that registry —
// not the origins' "not configured" answer, which they did not give.
func TestUpstreamFallbackWithoutTheRegistry(t *testing.T) {
	cfg := agent.Config{Root: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
		Trackers: []string{"http://127.0.0.1:1"}, Origins: []string{"http://127.0.0.1:1"},
		Upstreams: []upstream.Config{{Host: "registry.lan:5000", URL: "http://127.0.0.1:1"}}}
	cfg.P2P.Listen = "127.0.0.1:0"
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, "agent", a.Run)
	d := digest.FromString("held by no one")
	resp, body := do(t, "GET", fmt.Sprintf("%s/v2/team/app/blobs/%s?ns=upstream.test:5000", a.URL(), d))
	wantOCIError(t, resp, body, http.StatusBadGateway, "UNAVAILABLE")
	var e ociErrors
	_ = json.Unmarshal(body, &e)
	if msg := e.Errors[0].Message; !strings.Contains(msg, `"upstream.test:5000"`) || !strings.Contains(msg, "[[upstream]]") {
		t.Errorf("message %q does not name the registry and [[upstream]]", msg)
	}
}
