package clienttest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoal-dev/shoal/agent/nodesetup"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/origin"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// TestNodeSetupCRIODropInSkopeo: CRI-O pulls with containers/image, which
// reads registries.conf and its drop-ins; skopeo is that library on the
// command line (CRI-O itself is not packaged for this machine). The drop-in
// node-setup writes, as written, must send a pull of ghcr.io/<repo>:<tag>
// through the agent, as /v2/ghcr.io/<repo>/... (containers/image sends no
// ?ns=), and the image must arrive whole. ghcr.io is the origins' name for
// the test's local registry: a mirror path can name only a host without a
// port.
func TestNodeSetupCRIODropInSkopeo(t *testing.T) {
	need(t, "skopeo")
	const regHost = "ghcr.io"
	img, err := localregistry.SampleImage(3, 4<<20, 216)
	if err != nil {
		t.Fatal(err)
	}
	c, s := startClusterWith(t, "clienttest/crio", img, func(o *cluster.Options) {
		o.OriginConfig = func(_ int, oc *origin.Config) {
			oc.Upstreams = append(oc.Upstreams, upstream.Config{Host: regHost, URL: oc.Upstreams[0].URL})
		}
	})
	rec := &recorder{}
	au, _ := url.Parse(c.Agents[0].URL())
	proxy := httptest.NewServer(rec.wrap(httputil.NewSingleHostReverseProxy(au)))
	t.Cleanup(proxy.Close)

	// containers/image reads $HOME/.config/containers/registries.conf when
	// it exists, and then the drop-ins beside it instead of /etc's.
	home := t.TempDir()
	writeFile(t, filepath.Join(home, ".config/containers/registries.conf"), "unqualified-search-registries = []\n")
	o := nodesetup.Options{Root: home, CRIO: true, CRIODropIn: "/.config/containers/registries.conf.d/shoal.conf",
		Mirror: proxy.URL, Registries: []nodesetup.Registry{{Host: regHost}}}
	if err := nodesetup.Install(o, testutil.Logger(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("drop-in:\n%s", mustReadFile(t, filepath.Join(home, o.CRIODropIn)))

	// dir: keeps the manifest as pulled (oci: would convert it).
	out := filepath.Join(t.TempDir(), "image")
	ref := fmt.Sprintf("%s/%s:%s", regHost, s.Repo, s.Tag)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "skopeo", "--insecure-policy", "--debug", "copy", "docker://"+ref, "dir:"+out)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CONFIG_HOME=") || strings.HasPrefix(kv, "CONTAINERS_")
	}), "HOME="+home)
	start := time.Now()
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo copy docker://%s: %v\n%s", ref, err, log)
	}
	t.Logf("skopeo copy docker://%s in %.2fs", ref, time.Since(start).Seconds())

	// Every file skopeo wrote, by its sha256: the manifest and every blob
	// as the registry holds them.
	got := map[string]bool{}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(out, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[fmt.Sprintf("sha256:%x", sha256.Sum256(b))] = true
	}
	blobs := append([]v1.Hash{s.Config}, s.Layers...)
	want := []string{"/v2/" + regHost + "/" + s.Repo + "/manifests/" + s.Tag}
	for _, d := range append([]v1.Hash{s.Manifest}, blobs...) {
		if !got[d.String()] {
			t.Errorf("%s is not among what skopeo wrote to %s", d, out)
		}
	}
	for _, d := range blobs {
		want = append(want, "/v2/"+regHost+"/"+s.Repo+"/blobs/"+d.String())
	}

	reqs := rec.list()
	for _, p := range want {
		if !rec.saw(p, "") {
			t.Errorf("no request for %s reached the agent; requests:\n%s\nskopeo:\n%s", p, strings.Join(reqs, "\n"), log)
		}
	}
	t.Logf("requests through the agent:\n%s", strings.Join(reqs, "\n"))
}
