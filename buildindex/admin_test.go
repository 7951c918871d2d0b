package buildindex_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/internal/testutil"
)

// With admin_token set, writes need it; reads stay open; the token is never
// printed.
func TestAdminTokenGuardsWrites(t *testing.T) {
	const token = "s3cret-admin-token"
	var logs testutil.LogBuffer
	cfg := buildindex.Config{Listen: "127.0.0.1:0", Root: t.TempDir(), AdminToken: token, ResolveTimeout: time.Second}
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := buildindex.New(cfg, logs.Logger())
	if err != nil {
		t.Fatal(err)
	}
	serve(t, "buildindex", s.Run)
	body, _ := json.Marshal(tagInfo{Digest: digest.FromString("m"), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 10})
	put := func(auth string) *http.Response {
		req, _ := http.NewRequest(http.MethodPut, tagURL(s, testRepo, "guarded"), bytes.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, auth := range []string{"", "Bearer wrong", "Basic " + token, token} {
		if resp := put(auth); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("PUT with Authorization %q: %d, want 401", auth, resp.StatusCode)
		}
	}
	if resp := put("Bearer " + token); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT with the token: %d", resp.StatusCode)
	}
	if resp, _ := do(t, http.MethodGet, tagURL(s, testRepo, "guarded"), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET (open) after the PUT: %d", resp.StatusCode)
	}
	printed, ok := cfg.Redacted().(buildindex.Config)
	if !ok || printed.AdminToken == token || strings.Contains(logs.String(), token) {
		t.Fatal("the admin token leaks into --print-config or the logs")
	}
}
