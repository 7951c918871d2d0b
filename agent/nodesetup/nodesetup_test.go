package nodesetup

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// snapshot is every file and directory under dir: path -> content ("/" for a directory) and mode.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			m[rel] = "/ " + fi.Mode().String()
			return nil
		}
		b, err := os.ReadFile(p)
		m[rel] = fi.Mode().String() + " " + string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameTree(t *testing.T, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: before uninstall-after-install %q, now %q", k, v, after[k])
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			t.Errorf("%s: left behind: %q", k, v)
		}
	}
}

// hostsOf decodes a hosts.toml and returns its server and hosts in order.
func hostsOf(t *testing.T, p string) (server string, hosts []string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	md, err := toml.Decode(string(b), &v)
	if err != nil {
		t.Fatalf("%s is not TOML: %v\n%s", p, err, b)
	}
	server, _ = v["server"].(string)
	for _, k := range md.Keys() {
		if len(k) == 2 && k[0] == "host" {
			hosts = append(hosts, k[1])
		}
	}
	return server, hosts
}

func TestInstallUninstallLeavesUserFilesAsTheyWere(t *testing.T) {
	user := map[string]string{
		// top-level keys then tables: the agent goes before the first table
		"ghcr.io/hosts.toml": "server = \"https://ghcr.io\"\n\n[host.\"https://mirror.corp\"]\n  capabilities = [\"pull\"]\n",
		// no tables and no final newline
		"quay.io/hosts.toml": "server = \"https://quay.io\"",
		// empty file
		"registry.lan/hosts.toml": "",
	}
	root := t.TempDir()
	certs := filepath.Join(root, "etc/containerd/certs.d")
	for p, body := range user {
		full := filepath.Join(certs, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// a directory with a certificate but no hosts.toml
	if err := os.MkdirAll(filepath.Join(certs, "docker.io"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(certs, "docker.io", "ca.crt"), []byte("cert"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, root)

	o := Options{Root: root, Containerd: true, CertsDir: "/etc/containerd/certs.d"}
	for _, h := range []string{"ghcr.io", "quay.io", "registry.lan", "docker.io", "new.example.com:5000=http://new.example.com:5000", "_default"} {
		r, err := ParseRegistry(h)
		if err != nil {
			t.Fatal(err)
		}
		o.Registries = append(o.Registries, r)
	}
	log := slog.New(slog.DiscardHandler)
	for range 2 { // idempotent
		if err := Install(o, log); err != nil {
			t.Fatal(err)
		}
	}
	mirror := "http://127.0.0.1:7650"
	for _, c := range []struct{ host, server string }{
		{"ghcr.io", "https://ghcr.io"}, {"quay.io", "https://quay.io"}, {"registry.lan", ""},
		{"docker.io", "https://registry-1.docker.io"}, {"new.example.com:5000", "http://new.example.com:5000"}, {"_default", ""},
	} {
		p := filepath.Join(certs, c.host, "hosts.toml")
		server, hosts := hostsOf(t, p)
		if server != c.server {
			t.Errorf("%s: server %q, want %q", p, server, c.server)
		}
		if len(hosts) == 0 || hosts[0] != mirror {
			b, _ := os.ReadFile(p)
			t.Errorf("%s: hosts %q: want the agent first\n%s", p, hosts, b)
		}
		if n := strings.Count(mustRead(t, p), blockBegin); n != 1 {
			t.Errorf("%s: %d agent blocks, want 1", p, n)
		}
	}
	if _, hosts := hostsOf(t, filepath.Join(certs, "ghcr.io", "hosts.toml")); len(hosts) != 2 || hosts[1] != "https://mirror.corp" {
		t.Errorf("ghcr.io: the user's mirror is gone or moved: %q", hosts)
	}
	if fi, _ := os.Stat(filepath.Join(certs, "ghcr.io", "hosts.toml")); fi.Mode().Perm() != 0o640 {
		t.Errorf("ghcr.io: mode %v, want the user's 0640", fi.Mode())
	}

	for range 2 {
		if err := Uninstall(o, log); err != nil {
			t.Fatal(err)
		}
	}
	sameTree(t, before, snapshot(t, root))
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A user who added entries to a file setup wrote keeps them on uninstall.
func TestUninstallKeepsWhatTheUserAddedToOurFile(t *testing.T) {
	root := t.TempDir()
	o := Options{Root: root, Containerd: true, Registries: []Registry{{Host: "ghcr.io"}}}
	log := slog.New(slog.DiscardHandler)
	if err := Install(o, log); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, DefaultCertsDir, "ghcr.io", "hosts.toml")
	added := "\n[host.\"https://mirror.corp\"]\n  capabilities = [\"pull\"]\n"
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(added)
	f.Close()
	if err := Uninstall(o, log); err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, p)
	if strings.Contains(got, "127.0.0.1:7650") || !strings.Contains(got, added) {
		t.Errorf("after uninstall:\n%s", got)
	}
}

func TestUserTableForTheMirrorIsLeftAlone(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, DefaultCertsDir, "ghcr.io", "hosts.toml")
	os.MkdirAll(filepath.Dir(p), 0o755)
	body := "[host.\"http://127.0.0.1:7650\"]\n  capabilities = [\"pull\"]\n"
	os.WriteFile(p, []byte(body), 0o644)
	err := Install(Options{Root: root, Containerd: true, Registries: []Registry{{Host: "ghcr.io"}}}, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "already has") {
		t.Errorf("install over the user's own agent table: %v", err)
	}
	if mustRead(t, p) != body {
		t.Error("the user's file changed")
	}
}

func TestCheckConfigPath(t *testing.T) {
	dir := t.TempDir()
	certs := "/etc/containerd/certs.d"
	for _, c := range []struct {
		name, cfg, want string // want: "" = no message, else a substring
	}{
		{"v2 set", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n", ""},
		{"v2 list", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/docker/certs.d:/etc/containerd/certs.d/\"\n", ""},
		{"v2 unset", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n",
			`sets no config_path, so containerd reads no hosts.toml and pulls bypass the agent: set ` + "`" + `[plugins."io.containerd.grpc.v1.cri".registry] config_path = "/etc/containerd/certs.d"` + "`"},
		{"v2 elsewhere", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/other\"\n", `config_path = "/etc/other", which does not include /etc/containerd/certs.d`},
		{"v3 set", "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/etc/containerd/certs.d'\n", ""},
		{"v3 default", "version = 3\n", ""},
		{"v3 v2-key only", "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/x\"\n", ""},
		{"v3 elsewhere", "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = '/x'\n", `[plugins."io.containerd.cri.v1.images".registry] config_path = "/etc/containerd/certs.d"`},
		{"v1 unset", "[plugins.cri]\n", "plugins.cri.registry"},
		{"not toml", "version = = 2", "is not valid TOML"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".toml")
		os.WriteFile(p, []byte(c.cfg), 0o644)
		got := CheckConfigPath(p, "/etc/containerd/config.toml", certs)
		switch {
		case c.want == "" && got != "":
			t.Errorf("%s: %q, want no message", c.name, got)
		case c.want != "" && !strings.Contains(got, c.want):
			t.Errorf("%s: %q, want it to contain %q", c.name, got, c.want)
		case strings.Contains(got, "\n"):
			t.Errorf("%s: %q is more than one line", c.name, got)
		}
	}
	if got := CheckConfigPath(filepath.Join(dir, "missing.toml"), "/etc/containerd/config.toml", certs); !strings.Contains(got, "does not exist") {
		t.Errorf("missing config: %q", got)
	}
}

func TestCRIODropIn(t *testing.T) {
	root := t.TempDir()
	o := Options{Root: root, CRIO: true, Registries: []Registry{{Host: "docker.io"}, {Host: "ghcr.io"}, {Host: "lan:5000"}, {Host: DefaultRegistry}}}
	log := slog.New(slog.DiscardHandler)
	if err := Install(o, log); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, DefaultCRIODropIn)
	var v struct {
		Registry []struct {
			Prefix, Location string
			Mirror           []struct {
				Location string
				Insecure bool
			}
		}
	}
	if _, err := toml.Decode(mustRead(t, p), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Registry) != 2 || v.Registry[0].Prefix != "docker.io" || v.Registry[1].Mirror[0].Location != "127.0.0.1:7650/ghcr.io" || !v.Registry[1].Mirror[0].Insecure {
		t.Errorf("drop-in: %+v\n%s", v, mustRead(t, p))
	}
	if err := Uninstall(o, log); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("drop-in still there after uninstall: %v", err)
	}
	// A user's file of that name is neither overwritten nor removed.
	os.WriteFile(p, []byte("# mine\n"), 0o644)
	if err := Install(o, log); err == nil {
		t.Error("install over the user's drop-in succeeded")
	}
	Uninstall(o, log)
	if mustRead(t, p) != "# mine\n" {
		t.Error("the user's drop-in changed")
	}
}

func TestParseRegistry(t *testing.T) {
	for _, bad := range []string{"", "a/b", "x=ftp://y", "_default=https://x", "h=notaurl"} {
		if _, err := ParseRegistry(bad); err == nil {
			t.Errorf("ParseRegistry(%q) accepted", bad)
		}
	}
}
