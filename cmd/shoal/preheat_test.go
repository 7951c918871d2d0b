package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/testbed/cluster"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// TestPreheatCommand: shoal preheat --wait of a multi-arch index onto every
// agent, one platform picked; plain output without a terminal; a job that
// fails exits 1; bad flags exit 2.
func TestPreheatCommand(t *testing.T) {
	const token = "cli-admin-token"
	c, err := cluster.Start(cluster.Options{Dir: t.TempDir(), Agents: 2, Origins: 1, Log: slog.New(slog.DiscardHandler),
		BuildIndexConfig: func(bc *buildindex.Config) { bc.AdminToken = token }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("cluster close: %v", err)
		}
	})
	images := map[string]v1.Image{}
	for i, arch := range []string{"amd64", "arm64"} {
		img, err := localregistry.ImageOfLayers(uint64(30+i), 300<<10, 100<<10)
		if err != nil {
			t.Fatal(err)
		}
		images[arch] = img
	}
	idx, err := localregistry.Index(images)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Registry.PushIndex(ctx, "cli/multi", "v1", idx); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); len(c.BuildIndex.Agents()) < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("agents did not heartbeat")
		}
	}
	ref := c.Registry.Host() + "/cli/multi:v1"
	var out, errb bytes.Buffer
	code := run([]string{"preheat", "--buildindex", c.BuildIndex.URL(), "--token", token, "--scope", "all",
		"--platform", "linux/arm64", "--pin", "2h", "--wait", ref}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	o := out.String()
	for _, want := range []string{"job 1: " + ref, "agent agent0: done", "agent agent1: done", "origin http://", "job 1: SUCCESS in"} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q:\n%s", want, o)
		}
	}
	if strings.Contains(o, "\x1b[") {
		t.Errorf("escape sequences without a terminal:\n%q", o)
	}
	m, _ := images["arm64"].Manifest()
	amd, _ := images["amd64"].Manifest()
	for i, a := range c.Agents {
		for _, l := range m.Layers {
			if _, err := a.Store().Stat(digest.Digest(l.Digest.String())); err != nil {
				t.Errorf("agent %d: arm64 layer %s: %v", i, l.Digest, err)
			}
		}
		for _, l := range amd.Layers {
			if _, err := a.Store().Stat(digest.Digest(l.Digest.String())); err == nil {
				t.Errorf("agent %d holds amd64 layer %s: the platform filter did not apply", i, l.Digest)
			}
		}
	}

	out.Reset()
	errb.Reset()
	if code := run([]string{"preheat", "--buildindex", c.BuildIndex.URL(), "--token", token, "--wait", c.Registry.Host() + "/cli/multi:missing"}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "FAILURE") && !strings.Contains(errb.String(), "failed") {
		t.Errorf("missing tag: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"preheat", "--buildindex", c.BuildIndex.URL(), "--token", "wrong", ref}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "UNAUTHORIZED") {
		t.Errorf("wrong token: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"preheat", "--scope", "some", ref}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--scope") {
		t.Errorf("bad scope: exit %d, stderr %q", code, errb.String())
	}
}
