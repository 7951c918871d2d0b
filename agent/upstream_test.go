package agent_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// An agent whose tracker and origins are all unreachable, with a registry
// behind htpasswd as its [[upstream]]: the right password pulls the blob
// straight from the registry, a wrong one gets 502 DENIED, and neither
// password (nor its Basic encoding) shows in a log line or an answer.
func TestUpstreamFallbackKeepsCredentialsSecret(t *testing.T) {
	const user, pass, wrong = "puller", "agent-S3cret-never-logged", "agent-Wr0ng-never-logged"
	auth, err := localregistry.BasicAuth(t.TempDir(), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := localregistry.StartWithOptions(t.TempDir(), "127.0.0.1:0", localregistry.Options{Auth: auth}, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, "registry", reg.Serve)
	data := localregistry.RandomBytes(3<<20, 61)
	d, err := reg.PushBlobAs(context.Background(), "test/secret", data, &authn.Basic{Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}

	var logs testutil.LogBuffer
	var answers bytes.Buffer
	for _, tc := range []struct {
		password string
		status   int
	}{{pass, 200}, {wrong, 502}} {
		cfg := agent.Config{Root: t.TempDir(), Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0",
			Trackers: []string{"http://127.0.0.1:1"}, Origins: []string{"http://127.0.0.1:1"},
			Upstreams: []upstream.Config{{Host: reg.Host(), URL: reg.URL(), Username: user, Password: tc.password}}}
		cfg.P2P.Listen = "127.0.0.1:0"
		cfg.ApplyDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		a, err := agent.New(cfg, logs.Logger())
		if err != nil {
			t.Fatal(err)
		}
		testutil.Serve(t, "agent", a.Run)
		resp, body := do(t, "GET", fmt.Sprintf("%s/v2/test/secret/blobs/%s", a.URL(), d))
		answers.Write(body)
		for k, v := range resp.Header {
			fmt.Fprintf(&answers, "%s: %s\n", k, v)
		}
		if resp.StatusCode != tc.status {
			t.Fatalf("password %q: status %d %q, want %d", tc.password, resp.StatusCode, body, tc.status)
		}
		if tc.status == 200 && !bytes.Equal(body, data) {
			t.Fatal("wrong bytes from the upstream fallback")
		}
		if tc.status != 200 {
			wantOCIError(t, resp, body, http.StatusBadGateway, "DENIED")
		}
		m := metrics(t, a.AdminURL())
		if got := m[`shoal_agent_fallbacks_total{reason="origins_down"}`]; got != "1" {
			t.Errorf("origins_down fallbacks = %q, want 1", got)
		}
		for k, v := range m {
			answers.WriteString(k + " " + v + "\n")
		}
	}
	for _, p := range []string{pass, wrong} {
		for _, form := range []string{p, base64.StdEncoding.EncodeToString([]byte(user + ":" + p))} {
			if strings.Contains(logs.String(), form) || strings.Contains(answers.String(), form) {
				t.Errorf("a credential (%q) leaked into the logs or an answer", form)
			}
		}
	}
	if !strings.Contains(logs.String(), "every origin failed") {
		t.Errorf("the log does not say the origins failed:\n%s", logs.String())
	}
}
