package clienttest

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/shoal-dev/shoal/agent/nodesetup"
	"github.com/shoal-dev/shoal/internal/testutil"
)

// TestNodeSetupContainerd16CRI and TestNodeSetupContainerd2CRI: a private
// containerd with its CRI plugin on and config_path set, as a kubelet
// node's. A user's hosts.toml is already there for the image's registry.
// node-setup adds the agent; a pull by tag through the CRI image service
// (the kubelet's gRPC API) must reach the agent with ?ns=<registry-host>
// for the manifest and every blob; the user's entry stays; uninstall leaves
// certs.d byte for byte as it was.
func TestNodeSetupContainerd16CRI(t *testing.T) {
	need(t, "containerd", "ctr")
	if os.Geteuid() != 0 {
		t.Skip("SKIP: containerd needs root (it mounts snapshots and owns its root dir); run as root")
	}
	testNodeSetupCRI(t, "containerd", "ctr", func(dir, certsDir string) string {
		return fmt.Sprintf(`version = 2
root = %q
state = %q

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "c.sock"), filepath.Join(dir, "c.sock.ttrpc"),
			filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"), filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"), certsDir)
	})
}

func TestNodeSetupContainerd2CRI(t *testing.T) {
	containerd, ctr := containerd2Bins(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP: containerd needs root (it mounts snapshots and owns its root dir); run as root")
	}
	testNodeSetupCRI(t, containerd, ctr, func(dir, certsDir string) string {
		return fmt.Sprintf(`version = 3
root = %q
state = %q
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = %q
[ttrpc]
  address = %q
[debug]
  address = %q

[plugins.'io.containerd.internal.v1.opt']
  path = %q

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'

# CRI pulls through the transfer service, which unpacks as configured here.
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = "native"
  differ = "walking"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'native'
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = %q

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  disable_apparmor = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%q]
    conf_dir = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "c.sock"), filepath.Join(dir, "c.sock.ttrpc"),
			filepath.Join(dir, "debug.sock"), filepath.Join(dir, "opt"), certsDir, filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "conf"))
	})
}

func testNodeSetupCRI(t *testing.T, containerd, ctr string, config func(dir, certsDir string) string) {
	c, s := startCluster(t, "clienttest/nodesetup", 215)
	a := c.Agents[0]
	rec := &recorder{}
	au, _ := url.Parse(a.URL())
	proxy := httptest.NewServer(rec.wrap(httputil.NewSingleHostReverseProxy(au)))
	t.Cleanup(proxy.Close)
	regHost := c.UpstreamHost

	// The node: containerd's config and certs.d under root, as on a host.
	root := t.TempDir()
	certsDir := "/etc/containerd/certs.d"
	hostDir := filepath.Join(root, certsDir)
	// The user's entries: the registry's own hosts.toml with a mirror that
	// is down (containerd skips it), and a file for another registry.
	userHosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+regHost, "http://127.0.0.1:1")
	writeFile(t, filepath.Join(hostDir, regHost, "hosts.toml"), userHosts)
	writeFile(t, filepath.Join(hostDir, "quay.io", "hosts.toml"), "server = \"https://quay.io\"\n")
	before := tree(t, hostDir)

	dir := t.TempDir()
	cfgFile := filepath.Join(root, "etc/containerd/config.toml")
	writeFile(t, cfgFile, config(dir, hostDir))
	sock := filepath.Join(dir, "c.sock")
	runContainerd(t, containerd, ctr, dir, mustReadFile(t, cfgFile), sock)

	o := nodesetup.Options{
		Root: root, CertsDir: certsDir, Containerd: true, Mirror: proxy.URL,
		Registries: []nodesetup.Registry{{Host: regHost, Server: "http://" + regHost}, {Host: nodesetup.DefaultRegistry}},
	}
	if err := nodesetup.Install(o, testutil.Logger(t)); err != nil {
		t.Fatal(err)
	}
	// config_path names the host-side directory (under root here).
	if msg := nodesetup.CheckConfigPath(cfgFile, cfgFile, hostDir); msg != "" {
		t.Errorf("config_path is set, yet: %s", msg)
	}
	after := mustReadFile(t, filepath.Join(hostDir, regHost, "hosts.toml"))
	t.Logf("hosts.toml after node-setup:\n%s", after)
	if !strings.Contains(after, userHosts[strings.Index(userHosts, "[host."):]) {
		t.Errorf("the user's [host] entry is gone:\n%s", after)
	}

	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	images := runtimeapi.NewImageServiceClient(conn)
	ref := fmt.Sprintf("%s/%s:%s", regHost, s.Repo, s.Tag)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The CRI plugin may come up a moment after the socket answers ctr.
	var pulled *runtimeapi.PullImageResponse
	start := time.Now()
	for {
		pulled, err = images.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
		if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "Unimplemented") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("CRI PullImage %s: %v\ncontainerd log (warnings and errors):\n%s", ref, err, containerdLogProblems(dir))
	}
	t.Logf("CRI PullImage %s: %s in %.2fs", ref, pulled.ImageRef, time.Since(start).Seconds())
	st, err := images.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil || st.Image == nil {
		t.Fatalf("CRI ImageStatus %s: %v %v", ref, err, st)
	}
	if !containsDigest(st.Image.RepoDigests, s.Manifest.String()) {
		t.Errorf("CRI image %s: repo digests %v, want %s", ref, st.Image.RepoDigests, s.Manifest)
	}

	reqs := rec.list()
	want := []string{"/v2/" + s.Repo + "/manifests/" + s.Tag, "/v2/" + s.Repo + "/blobs/" + s.Config.String()}
	for _, l := range s.Layers {
		want = append(want, "/v2/"+s.Repo+"/blobs/"+l.String())
	}
	for _, p := range want {
		if !rec.saw(p, regHost) {
			t.Errorf("no request for %s?ns=%s reached the agent; requests:\n%s", p, regHost, strings.Join(reqs, "\n"))
		}
	}
	t.Logf("requests through the agent:\n%s", strings.Join(reqs, "\n"))

	if err := nodesetup.Uninstall(o, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, hostDir); got != before {
		t.Errorf("certs.d after uninstall:\n%s\nbefore install:\n%s", got, before)
	}

	// The same node without config_path, or with it elsewhere: one line
	// saying so, with the fix. containerd 2.x (config version 3) reads
	// /etc/containerd/certs.d when config_path is unset: no message then.
	cfg := mustReadFile(t, cfgFile)
	v3 := strings.HasPrefix(cfg, "version = 3")
	writeFile(t, cfgFile, strings.Replace(cfg, "config_path", "# config_path", 1))
	msg := nodesetup.CheckConfigPath(cfgFile, "/etc/containerd/config.toml", certsDir)
	t.Logf("with config_path unset: %q", msg)
	if v3 && msg != "" {
		t.Errorf("containerd 2.x with config_path unset reads %s by default, yet: %s", certsDir, msg)
	}
	if !v3 && (!strings.Contains(msg, "sets no config_path") || !strings.Contains(msg, certsDir) || strings.Contains(msg, "\n")) {
		t.Errorf("with config_path unset the message is %q: want one line saying so and naming %s", msg, certsDir)
	}
	writeFile(t, cfgFile, strings.Replace(cfg, "config_path = ", "config_path = \"/etc/elsewhere\" # ", 1))
	msg = nodesetup.CheckConfigPath(cfgFile, "/etc/containerd/config.toml", certsDir)
	t.Logf("with config_path elsewhere: %q", msg)
	if !strings.Contains(msg, `config_path = "/etc/elsewhere"`) || !strings.Contains(msg, certsDir) || strings.Contains(msg, "\n") {
		t.Errorf("with config_path elsewhere the message is %q: want one line naming it and %s", msg, certsDir)
	}
}

func containsDigest(repoDigests []string, d string) bool {
	for _, r := range repoDigests {
		if strings.HasSuffix(r, "@"+d) {
			return true
		}
	}
	return false
}

func writeFile(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustReadFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tree lists every entry under dir with its mode and content.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(&b, "%s %v", rel, fi.Mode())
		if !fi.IsDir() {
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %q", c)
		}
		b.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
