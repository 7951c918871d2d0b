package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeSetupCommand(t *testing.T) {
	root := t.TempDir()
	run1 := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(append([]string{"node-setup", "--root", root}, args...), &out, &errb)
		return code, out.String() + errb.String()
	}
	for _, bad := range [][]string{{"--registry", "a/b"}, {"--runtime", "docker"}, {"--mirror", "127.0.0.1:7650"}, {"extra"}} {
		if code, out := run1(bad...); code == 0 {
			t.Errorf("node-setup %v: exit 0, want an error:\n%s", bad, out)
		}
	}
	code, out := run1("--registry", "ghcr.io", "--registry", "lan:5000=http://lan:5000", "--runtime", "containerd,cri-o")
	if code != 0 {
		t.Fatalf("node-setup: exit %d:\n%s", code, out)
	}
	for _, p := range []string{"etc/containerd/certs.d/ghcr.io/hosts.toml", "etc/containerd/certs.d/lan:5000/hosts.toml", "etc/containers/registries.conf.d/shoal.conf"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if !strings.Contains(out, "sets no config_path") && !strings.Contains(out, "does not exist") {
		t.Errorf("no config_path message:\n%s", out)
	}
	if code, out := run1("--registry", "ghcr.io", "--registry", "lan:5000=http://lan:5000", "--runtime", "containerd,cri-o", "--uninstall"); code != 0 {
		t.Fatalf("node-setup --uninstall: exit %d:\n%s", code, out)
	}
	left, _ := filepath.Glob(filepath.Join(root, "etc/containerd/certs.d/*"))
	if _, err := os.Stat(filepath.Join(root, "etc/containers/registries.conf.d/shoal.conf")); len(left) > 0 || err == nil {
		t.Errorf("left after uninstall: %v, drop-in: %v", left, err)
	}
}
