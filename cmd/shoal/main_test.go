package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/tracker"
)

func shoal(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestBadConfigNamesKeyAndFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		role, text string
		want       []string
	}{
		{"agent", "listen = \"127.0.0.1:7650\"\nlisten_adress = \"x\"\n", []string{`unknown key "listen_adress"`}},
		{"agent", "[p2p]\nupload_rate = \"fast\"\n", []string{"p2p.upload_rate", "fast"}},
		{"agent", "stall_timeout = \"10ms\"\n", []string{`key "stall_timeout"`}},
		{"agent", "[[upstream]]\nhost = \"r.example\"\n[[upstream]]\nhost = \"r.example\"\n", []string{`key "upstream[1].host"`, "twice"}},
		{"origin", "piece_length = \"3MiB\"\n", []string{`key "piece_length"`, "power of two"}},
		{"origin", "[[upstream]]\nhost = \"r.example\"\nusername = \"u\"\n", []string{`key "upstream[0].password"`}},
		{"origin", "default_upstream = \"nowhere.example\"\n", []string{`key "default_upstream"`}},
		{"tracker", "max_peers = -4\n", []string{`key "max_peers"`}},
		{"tracker", "origins = [\"ftp://x\"]\n", []string{`key "origins"`}},
		{"tracker", "[http]\nmax_header_bytes = \"1KiB\"\n", []string{`key "http.max_header_bytes"`}},
		{"buildindex", "[http]\nwrite_idle_timeout = \"1ms\"\n", []string{`key "http.write_idle_timeout"`}},
		{"agent", "[tls]\ncert = \"/etc/shoal/tls/tls.crt\"\n", []string{`key "tls.key"`, "/etc/shoal/tls/tls.crt"}},
		{"tracker", "[tls]\ncert = \"/c\"\nkey = \"/k\"\nmtls = true\n", []string{`key "tls.ca"`}},
		{"buildindex", "[tls]\ncert = \"/c\"\nkey = \"/k\"\nadmin_names = [\"ops\"]\n", []string{`key "tls.admin_names"`}},
		// Files are read when the role starts.
		{"origin", "listen = \"127.0.0.1:0\"\nroot = \"" + dir + "/o\"\n[p2p]\nlisten = \"127.0.0.1:0\"\n[tls]\nca = \"" + dir + "/missing-ca.crt\"\n",
			[]string{`key "tls.ca"`, dir + "/missing-ca.crt"}},
		{"tracker", "listen = \"127.0.0.1:0\"\n[tls]\ncert = \"" + dir + "/tracker.toml\"\nkey = \"" + dir + "/tracker.toml\"\n",
			[]string{`key "tls.cert"`, dir + "/tracker.toml"}},
	} {
		path := filepath.Join(dir, tc.role+".toml")
		if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := shoal(t, tc.role, "--config", path)
		if code != 1 {
			t.Errorf("%s with %q: exit %d, want 1", tc.role, tc.text, code)
		}
		for _, w := range append(tc.want, path) {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s with %q: stderr %q does not mention %q", tc.role, tc.text, stderr, w)
			}
		}
	}
}

func TestPrintConfigRoundTrips(t *testing.T) {
	for role, cfg := range map[string]config.Validator{"agent": &agent.Config{}, "origin": &origin.Config{}, "tracker": &tracker.Config{}} {
		code, out, stderr := shoal(t, role, "--print-config")
		if code != 0 {
			t.Fatalf("%s --print-config: exit %d: %s", role, code, stderr)
		}
		path := filepath.Join(t.TempDir(), role+".toml")
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := config.Load(path, cfg); err != nil {
			t.Errorf("%s: printed config does not load back: %v\n%s", role, err, out)
		}
	}
}

func TestPrintConfigHidesCredentials(t *testing.T) {
	// Origins and agents (whose [[upstream]] is the last-resort fallback)
	// both hold upstream credentials.
	for _, role := range []string{"origin", "agent"} {
		path := filepath.Join(t.TempDir(), role+".toml")
		text := "[[upstream]]\nhost = \"r.example\"\nusername = \"bob\"\npassword = \"hunter2-secret\"\n[[upstream]]\nhost = \"t.example\"\ntoken = \"tok-secret\"\n"
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		code, out, stderr := shoal(t, role, "--config", path, "--print-config")
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", role, code, stderr)
		}
		if strings.Contains(out, "hunter2-secret") || strings.Contains(out, "tok-secret") || !strings.Contains(out, "bob") {
			t.Fatalf("%s: printed config leaks credentials or lost the username:\n%s", role, out)
		}
	}
}

// --print-config works where the [tls] files are not mounted (a chart's
// rendered configs checked on a laptop): they are read when the role starts.
func TestPrintConfigWithTLS(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.toml")
	text := "[tls]\ncert = \"/nowhere/tls.crt\"\nkey = \"/nowhere/tls.key\"\nca = \"/nowhere/ca.crt\"\nmtls = true\n"
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := shoal(t, "agent", "--config", path, "--print-config")
	if code != 0 || !strings.Contains(out, "[tls]") || !strings.Contains(out, `reload_interval = "10s"`) {
		t.Fatalf("exit %d: %s\n%s", code, stderr, out)
	}
}

func TestUsageAndVersion(t *testing.T) {
	if code, out, _ := shoal(t, "version"); code != 0 || !strings.HasPrefix(out, "shoal ") {
		t.Errorf("version: %d %q", code, out)
	}
	if code, _, stderr := shoal(t, "frobnicate"); code != 2 || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, stderr)
	}
	if code, _, _ := shoal(t); code != 2 {
		t.Errorf("no command: exit %d", code)
	}
	if code, _, stderr := shoal(t, "agent", "--bogus"); code != 2 || !strings.Contains(stderr, "bogus") {
		t.Errorf("bad flag: %d %q", code, stderr)
	}
	if code, _, stderr := shoal(t, "demo", "--layer-size", "huge"); code != 2 || !strings.Contains(stderr, "--layer-size") {
		t.Errorf("bad demo flag: %d %q", code, stderr)
	}
	if code, _, stderr := shoal(t, "bench", "scale", "--only-size", "huge"); code != 2 || !strings.Contains(stderr, "--only-size") {
		t.Errorf("bad --only-size: %d %q", code, stderr)
	}
	if code, _, stderr := shoal(t, "bench", "scale", "--only", "64", "--only-size", "1GiB"); code != 2 || !strings.Contains(stderr, "no row of the scale set") {
		t.Errorf("--only-size that matches no row: %d %q", code, stderr)
	}
}

func TestDemoJSON(t *testing.T) {
	code, out, stderr := shoal(t, "demo", "--json", "--any-ports", "--agents", "4", "--layers", "2", "--layer-size", "6MiB",
		"--dir", t.TempDir())
	if code != 0 {
		t.Fatalf("demo exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("demo --json printed %q: %v", out, err)
	}
	for _, k := range []string{"agents", "blobs", "blob_bytes", "upstream_blob_gets", "bytes_from_origins", "bytes_from_peers",
		"agent_seconds_p50", "agent_seconds_max", "all_verified", "cpu_seconds", "peak_rss_bytes"} {
		if _, ok := r[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if r["agents"] != 4.0 || r["blobs"] != 3.0 {
		t.Errorf("agents %v, blobs %v; want 4 and 3 (config + 2 layers)", r["agents"], r["blobs"])
	}
	if r["upstream_blob_gets"] != r["blobs"] {
		t.Errorf("upstream_blob_gets %v != blobs %v", r["upstream_blob_gets"], r["blobs"])
	}
	if r["all_verified"] != true {
		t.Errorf("all_verified = %v", r["all_verified"])
	}
	if fo, fp := r["bytes_from_origins"].(float64), r["bytes_from_peers"].(float64); fo+fp < 4*2*6<<20 {
		t.Errorf("agents received %v + %v bytes over P2P, less than they pulled", fo, fp)
	}
}

// The README's main command as a new user runs it, ten times in a row, at
// its default size: every run must verify. (It once checked each agent's
// cache right after the last byte, racing the commit that follows it, and
// failed 2 runs in 5 on a machine with slow commits.)
func TestDemoTenRunsInARow(t *testing.T) {
	for i := range 10 {
		start := time.Now()
		code, out, stderr := shoal(t, "demo", "--json", "--any-ports", "--dir", t.TempDir())
		if code != 0 {
			t.Fatalf("run %d: demo exit %d\nstdout: %s\nstderr: %s", i, code, out, stderr)
		}
		var r struct {
			AllVerified bool     `json:"all_verified"`
			Failures    []string `json:"failures"`
			P50         float64  `json:"agent_seconds_p50"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("run %d: demo --json printed %q: %v", i, out, err)
		}
		if !r.AllVerified || len(r.Failures) > 0 {
			t.Fatalf("run %d: all_verified %v, failures %q", i, r.AllVerified, r.Failures)
		}
		t.Logf("run %d: p50 %.2f s, %.1f s in all", i, r.P50, time.Since(start).Seconds())
	}
}

// The files in examples/ must stay true to the code.
func TestExamplesLoad(t *testing.T) {
	for role, cfg := range map[string]config.Validator{"agent": &agent.Config{}, "origin": &origin.Config{}, "tracker": &tracker.Config{},
		"buildindex": &buildindex.Config{}} {
		path := filepath.Join("..", "..", "examples", role+".toml")
		if err := config.Load(path, cfg); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}
