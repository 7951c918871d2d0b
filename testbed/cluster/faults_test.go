package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// mountTmpfs mounts a tmpfs of size bytes on a new directory (unmounted at
// cleanup): a real disk that fills up, or turns read-only, on demand.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs (a small real disk for the disk-full and read-only tests)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needed for the disk-full and read-only tests): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func remount(t *testing.T, dir, mode string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, mode, err, out)
	}
}

// ociError GETs url and returns the status and the first OCI error.
func ociError(t *testing.T, ctx context.Context, url string) (int, string, string) {
	t.Helper()
	body, resp, err := get(ctx, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("GET %s: %s with body %q: want OCI error JSON", url, resp.Status, body)
	}
	return resp.StatusCode, e.Errors[0].Code, e.Errors[0].Message
}

// leftovers lists every file below root's downloads/ and blobs/ (the
// store's layout); want lists the blobs that may be there.
func leftovers(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	for _, sub := range []string{"downloads", "blobs"} {
		_ = filepath.WalkDir(filepath.Join(root, sub), func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				files = append(files, strings.TrimPrefix(p, root+"/"))
			}
			return nil
		})
	}
	return files
}

// A full disk: a blob that does not fit gets 507 before any byte moves
// (the agent reserves a blob's space when its download starts), nothing
// partial is left, and blobs that fit still pull.
func TestDiskFullGivesAClearErrorAndLeavesNothing(t *testing.T) {
	root := mountTmpfs(t, 8<<20)
	logs := &testutil.LogBuffer{}
	c := startCluster(t, Options{Agents: 1, Origins: 1, PieceLength: 1 << 20, Log: logs.Logger(),
		AgentConfig: func(_ int, ac *agent.Config) { ac.Root = root }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	big := localregistry.RandomBytes(16<<20, 31)
	dBig, err := c.Registry.PushBlob(ctx, "test/disk", big)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Agents[0]
	start := time.Now()
	status, code, msg := ociError(t, ctx, fmt.Sprintf("%s/v2/test/disk/blobs/%s", a.URL(), dBig))
	if status != 507 || code != "UNAVAILABLE" || !strings.Contains(msg, "no space") {
		t.Fatalf("16 MiB blob on an 8 MiB disk: %d %s %q, want 507 UNAVAILABLE naming the lack of space", status, code, msg)
	}
	t.Logf("disk full: %d %s %q in %s", status, code, msg, time.Since(start).Round(time.Millisecond))
	if files := leftovers(t, root); len(files) != 0 {
		t.Fatalf("files left in the cache after a failed pull: %v", files)
	}
	testutil.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "no space left on device")
	}, "the log does not say the disk is full:\n%s", logs.String())

	small := localregistry.RandomBytes(2<<20, 32)
	dSmall, err := c.Registry.PushBlob(ctx, "test/disk", small)
	if err != nil {
		t.Fatal(err)
	}
	body, resp, err := get(ctx, fmt.Sprintf("%s/v2/test/disk/blobs/%s", a.URL(), dSmall))
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, small) {
		t.Fatalf("2 MiB blob that fits: %v %v, %d bytes", err, resp, len(body))
	}
}

// A read-only cache: an agent refuses to start on one, naming the
// directory and the cause; one that turns read-only while running answers
// a clear 500 for new blobs, keeps serving what it holds, and recovers when
// the disk is writable again.
func TestReadOnlyCache(t *testing.T) {
	root := mountTmpfs(t, 64<<20)
	remount(t, root, "ro")
	cfg := agent.Config{Root: root, Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"}
	cfg.ApplyDefaults()
	cfg.P2P.Listen = "127.0.0.1:0"
	if _, err := agent.New(cfg, testLog(t)); err == nil || !strings.Contains(err.Error(), root) ||
		!strings.Contains(err.Error(), "read-only file system") {
		t.Fatalf("agent on a read-only cache: %v, want an error naming %s and the read-only filesystem", err, root)
	} else {
		t.Logf("start on a read-only cache: %v", err)
	}
	remount(t, root, "rw")

	c := startCluster(t, Options{Agents: 1, Origins: 1, PieceLength: 1 << 20,
		AgentConfig: func(_ int, ac *agent.Config) { ac.Root = root }})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := c.Agents[0]
	held := localregistry.RandomBytes(4<<20, 33)
	dHeld, err := c.Registry.PushBlob(ctx, "test/ro", held)
	if err != nil {
		t.Fatal(err)
	}
	if body, resp, err := get(ctx, fmt.Sprintf("%s/v2/test/ro/blobs/%s", a.URL(), dHeld)); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, held) {
		t.Fatalf("first pull: %v %v", err, resp)
	}
	// Serve the held blob from a restarted agent: it seeds from a read-only
	// descriptor then (a fresh download keeps its writable one while it
	// seeds, and the kernel refuses to remount a disk with writers read-only).
	if a, err = c.RestartAgent(0); err != nil {
		t.Fatal(err)
	}
	if body, resp, err := get(ctx, fmt.Sprintf("%s/v2/test/ro/blobs/%s", a.URL(), dHeld)); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, held) {
		t.Fatalf("pull after restart: %v %v", err, resp)
	}
	fresh := localregistry.RandomBytes(4<<20, 34)
	dFresh, err := c.Registry.PushBlob(ctx, "test/ro", fresh)
	if err != nil {
		t.Fatal(err)
	}

	remount(t, root, "ro")
	status, code, msg := ociError(t, ctx, fmt.Sprintf("%s/v2/test/ro/blobs/%s", a.URL(), dFresh))
	if status != 500 || code != "UNAVAILABLE" || !strings.Contains(msg, "read-only") {
		t.Fatalf("new blob on a read-only cache: %d %s %q, want 500 UNAVAILABLE naming the read-only filesystem", status, code, msg)
	}
	if body, resp, err := get(ctx, fmt.Sprintf("%s/v2/test/ro/blobs/%s", a.URL(), dHeld)); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, held) {
		t.Fatalf("held blob on a read-only cache: %v %v", err, resp)
	}

	remount(t, root, "rw")
	if body, resp, err := get(ctx, fmt.Sprintf("%s/v2/test/ro/blobs/%s", a.URL(), dFresh)); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, fresh) {
		t.Fatalf("after the disk is writable again: %v %v", err, resp)
	}
	t.Logf("read-only while running: %d %s %q; the held blob was still served; recovered once writable", status, code, msg)
}

// Bit rot or tampering in a cached blob: after a restart the agent re-hashes
// a blob before its first use, finds the mismatch, removes the file and
// fetches the blob again; the client gets the right bytes.
func TestCorruptCachedBlobIsFetchedAgain(t *testing.T) {
	c := startCluster(t, Options{Agents: 1, Origins: 1, PieceLength: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := localregistry.RandomBytes(6<<20, 35)
	d, err := c.Registry.PushBlob(ctx, "test/rot", data)
	if err != nil {
		t.Fatal(err)
	}
	url := func() string { return fmt.Sprintf("%s/v2/test/rot/blobs/%s", c.Agents[0].URL(), d) }
	if body, resp, err := get(ctx, url()); err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("first pull: %v %v", err, resp)
	}
	waitCached(t, c.Agents[0].Store(), d, "blob not cached after the first pull")
	path := c.Agents[0].Store().Path(d)
	c.Stop(c.Agents[0])
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{data[3<<20] ^ 0x01}, 3<<20); err != nil { // one flipped bit
		t.Fatal(err)
	}
	f.Close()
	gets := c.Registry.TotalBlobGets()
	if _, err := c.RestartAgent(0); err != nil {
		t.Fatal(err)
	}
	body, resp, err := get(ctx, url())
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("pull after the cached file rotted: %v %v, equal %v", err, resp, bytes.Equal(body, data))
	}
	waitCached(t, c.Agents[0].Store(), d, "blob not cached again after the pull")
	if again, err := os.ReadFile(path); err != nil || !bytes.Equal(again, data) {
		t.Fatalf("the cache holds the rotten file still (%v)", err)
	}
	t.Logf("one flipped bit detected; fetched again through the swarm (upstream GETs before %d, after %d)", gets, c.Registry.TotalBlobGets())
}

// The upstream registry goes down: everything the cluster already holds is
// still served — a fresh agent pulls the whole image by tag (the tag from
// the build-index, the manifest from an origin's store, the layers through
// the swarm) — and a blob nobody holds gets a clear 5xx at once.
func TestUpstreamDownClusterServesWhatItHolds(t *testing.T) {
	c := startCluster(t, Options{Agents: 2, Origins: 2, PieceLength: 1 << 20})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	img, err := localregistry.SampleImage(3, 3<<20, 51)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.Push(ctx, "test/held", "v1", img); err != nil {
		t.Fatal(err)
	}
	nobody, err := c.Registry.PushBlob(ctx, "test/held", localregistry.RandomBytes(1<<20, 52))
	if err != nil {
		t.Fatal(err)
	}
	pull := func(a *agent.Agent) error {
		ref, err := name.ParseReference(strings.TrimPrefix(a.URL(), "http://")+"/test/held:v1", name.Insecure)
		if err != nil {
			return err
		}
		got, err := remote.Image(ref, remote.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("manifest by tag: %w", err)
		}
		if want, _ := img.Digest(); mustDigest(t, got) != want {
			return fmt.Errorf("image digest %s, want %s", mustDigest(t, got), want)
		}
		if _, err := got.RawConfigFile(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		layers, err := got.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			rc, err := l.Compressed() // go-containerregistry checks the digest as it reads
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			if err != nil {
				return fmt.Errorf("layer: %w", err)
			}
		}
		return nil
	}
	if err := pull(c.Agents[0]); err != nil {
		t.Fatalf("pull with the upstream up: %v", err)
	}
	c.Registry.SetDown(true)
	gets := c.Registry.TotalBlobGets()
	start := time.Now()
	if err := pull(c.Agents[1]); err != nil {
		t.Fatalf("fresh agent, upstream down: %v", err)
	}
	t.Logf("upstream down: a fresh agent pulled the 3-layer image by tag in %s", time.Since(start).Round(time.Millisecond))
	if g := c.Registry.TotalBlobGets(); g != gets {
		t.Errorf("the registry saw %d more blob GETs while down", g-gets)
	}
	start = time.Now()
	status, code, msg := ociError(t, ctx, fmt.Sprintf("%s/v2/test/held/blobs/%s", c.Agents[1].URL(), nobody))
	if el := time.Since(start); status < 500 || el > 10*time.Second {
		t.Fatalf("blob nobody holds, upstream down: %d %s %q after %s, want a 5xx within 10s", status, code, msg, time.Since(start))
	}
	t.Logf("blob nobody holds: %d %s %q in %s", status, code, msg, time.Since(start).Round(time.Millisecond))
}

func mustDigest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
