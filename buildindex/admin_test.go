package buildindex_test

import (
	"bytes"
	"encoding/json"
	"io"
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

// A PUT body over http.max_body_bytes gets 413 SIZE_INVALID and records
// nothing; one under it is taken.
func TestPutBodyLimit(t *testing.T) {
	cfg := buildindex.Config{Listen: "127.0.0.1:0", Root: t.TempDir(), ResolveTimeout: time.Second}
	cfg.HTTP.MaxBodyBytes = 1 << 10
	cfg.ApplyDefaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := buildindex.New(cfg, testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	serve(t, "buildindex", s.Run)
	info := tagInfo{Digest: digest.FromString("m"), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 10}
	small, _ := json.Marshal(info)
	// The same JSON padded with spaces past 1 KiB: still valid JSON.
	big := append(bytes.Repeat([]byte(" "), 2<<10), small...)
	for _, tc := range []struct {
		tag    string
		body   []byte
		status int
	}{{"big", big, http.StatusRequestEntityTooLarge}, {"small", small, http.StatusCreated}} {
		req, _ := http.NewRequest(http.MethodPut, tagURL(s, testRepo, tc.tag), bytes.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("PUT of %d bytes: %d %s, want %d", len(tc.body), resp.StatusCode, body, tc.status)
		}
		if tc.status == http.StatusRequestEntityTooLarge && !strings.Contains(string(body), "SIZE_INVALID") {
			t.Fatalf("413 without the OCI error: %s", body)
		}
	}
	// A recorded tag would be answered from the store (200); this one is not
	// (no origin runs here to resolve it).
	if resp, _ := do(t, http.MethodGet, tagURL(s, testRepo, "big"), nil); resp.StatusCode == http.StatusOK {
		t.Fatal("the oversized PUT was recorded")
	}
	if resp, _ := do(t, http.MethodGet, tagURL(s, testRepo, "small"), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("the PUT under the limit was not recorded: GET %d", resp.StatusCode)
	}
}
