package clienttest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestContainerdHostsMirror: a private containerd (its own root, state and
// socket) pulls an image named by its upstream registry host, with a
// hosts.toml that makes the agent that host's mirror. containerd must send
// every request to the agent with ?ns=<registry-host>, and the agent must
// serve the whole image. A recording proxy in front of the agent shows what
// containerd sent (the agent's request log does not include the query).
func TestContainerdHostsMirror(t *testing.T) {
	need(t, "containerd", "ctr")
	if os.Geteuid() != 0 {
		t.Skip("SKIP: containerd needs root (it mounts snapshots and owns its root dir); run as root")
	}
	c, s := startCluster(t, "clienttest/containerd", 202)
	a := c.Agents[0]

	rec := &recorder{}
	au, _ := url.Parse(a.URL())
	proxy := httptest.NewServer(rec.wrap(httputil.NewSingleHostReverseProxy(au)))
	t.Cleanup(proxy.Close)

	dir := t.TempDir()
	regHost := c.UpstreamHost // "127.0.0.1:port": the image's registry
	hostsDir := filepath.Join(dir, "certs.d")
	writeHostsTOML(t, hostsDir, regHost, proxy.URL)
	sock := startContainerd(t, dir)

	ref := fmt.Sprintf("%s/%s:%s", regHost, s.Repo, s.Tag)
	ctr := func(args ...string) string {
		return run(t, 2*time.Minute, "ctr", append([]string{"--address", sock, "--namespace", "clienttest"}, args...)...)
	}
	start := time.Now()
	out := ctr("images", "pull", "--hosts-dir", hostsDir, "--plain-http", "--snapshotter", "native", ref)
	t.Logf("ctr images pull %s: %.2fs", ref, time.Since(start).Seconds())
	if !strings.Contains(out, "done") {
		t.Errorf("ctr images pull output:\n%s", out)
	}
	if ls := ctr("images", "ls"); !strings.Contains(ls, s.Manifest.String()) {
		t.Errorf("ctr images ls does not list %s with digest %s:\n%s", ref, s.Manifest, ls)
	}

	// Every request reached the agent, with ns naming the registry host.
	reqs := rec.list()
	wantPaths := []string{"/v2/" + s.Repo + "/manifests/" + s.Tag, "/v2/" + s.Repo + "/blobs/" + s.Config.String()}
	for _, l := range s.Layers {
		wantPaths = append(wantPaths, "/v2/"+s.Repo+"/blobs/"+l.String())
	}
	for _, p := range wantPaths {
		if !rec.saw(p, regHost) {
			t.Errorf("no request for %s?ns=%s reached the agent; requests:\n%s", p, regHost, strings.Join(reqs, "\n"))
		}
	}
	if served := metric(t, a.AdminURL()+"/metrics", "shoal_agent_served_bytes_total"); served < float64(s.Bytes) {
		t.Errorf("agent served %.0f blob bytes, want at least the image's %d", served, s.Bytes)
	}
	t.Logf("requests through the agent:\n%s", strings.Join(reqs, "\n"))
}

// writeHostsTOML writes <dir>/<host>/hosts.toml as examples/containerd does:
// the upstream as server, the agent as a pull/resolve mirror.
func writeHostsTOML(t *testing.T, dir, host, mirror string) {
	t.Helper()
	d := filepath.Join(dir, host)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+host, mirror)
	if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startContainerd runs a private containerd under dir and returns its socket.
func startContainerd(t *testing.T, dir string) string {
	t.Helper()
	sock := filepath.Join(dir, "c.sock")
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc",
		filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"))
	runContainerd(t, "containerd", "ctr", dir, cfg, sock)
	return sock
}

// runContainerd writes cfg to dir/containerd.toml, runs the containerd
// binary with it (its log in dir/containerd.log) until the test ends, and
// waits until ctr gets an answer on sock. It skips the test when containerd
// cannot run here.
func runContainerd(t *testing.T, containerd, ctr, dir, cfg, sock string) {
	t.Helper()
	cfgPath := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(containerd, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})
	tail := func() string { b, _ := os.ReadFile(logf.Name()); return string(b[max(0, len(b)-3000):]) }
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Skipf("SKIP: containerd cannot run here: it exited at start:\n%s", tail())
		default:
		}
		if _, err := tryRun(5*time.Second, ctr, "--address", sock, "version"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer on %s within 30s:\n%s", sock, tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// recorder logs every request URI that passes through it.
type recorder struct {
	mu   sync.Mutex
	reqs []*url.URL
}

func (r *recorder) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		u := *req.URL
		r.mu.Lock()
		r.reqs = append(r.reqs, &u)
		r.mu.Unlock()
		h.ServeHTTP(w, req)
	})
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, u := range r.reqs {
		s = append(s, u.String())
	}
	return s
}

// saw reports whether a request for path carried ns=<ns>.
func (r *recorder) saw(path, ns string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.reqs {
		if u.Path == path && u.Query().Get("ns") == ns {
			return true
		}
	}
	return false
}
