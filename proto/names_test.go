package proto_test

import (
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/proto"
)

func TestValidTag(t *testing.T) {
	for tag, want := range map[string]bool{
		"latest": true, "v1.2.3": true, "_x": true, "A-b_c.d": true, strings.Repeat("a", 128): true,
		"": false, ".x": false, "-x": false, "a/b": false, "a:b": false, "a@b": false, strings.Repeat("a", 129): false,
	} {
		if got := proto.ValidTag(tag); got != want {
			t.Errorf("ValidTag(%q) = %v, want %v", tag, got, want)
		}
	}
}

func TestValidRepository(t *testing.T) {
	for name, want := range map[string]bool{
		"ubuntu": true, "library/ubuntu": true, "a/b/c": true, "a__b": true, "a---b": true, "a.b": true,
		strings.Repeat("a", 255): true,
		"":                       false, "A": false, "a..b": false, "a//b": false, "/a": false, "a/": false, "a_-b": false,
		"ghcr.io:443/x": false, strings.Repeat("a", 256): false,
	} {
		if got := proto.ValidRepository(name); got != want {
			t.Errorf("ValidRepository(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestCheckNamespace(t *testing.T) {
	for ns, want := range map[string]bool{
		"library/ubuntu": true, "ghcr.io/org/app": true, "localhost/x": true, "localhost:5000/x": true,
		"registry.example.com:8443/a/b": true, "127.0.0.1:5000/x": true, "[::1]:5000/x": true,
		"ghcr.io": true, "": false, "ghcr.io/": false, "ghcr.io/Org": false, "-bad.io/x": false,
		"bad..io/x": false, "a.io:port/x": false, "x/../y": false,
	} {
		if err := proto.CheckNamespace(ns); (err == nil) != want {
			t.Errorf("CheckNamespace(%q) = %v, want ok=%v", ns, err, want)
		}
	}
	if host, repo := proto.SplitNamespace("docker.io/library/ubuntu"); host != "docker.io" || repo != "library/ubuntu" {
		t.Errorf("SplitNamespace: %q %q", host, repo)
	}
	if host, repo := proto.SplitNamespace("library/ubuntu"); host != "" || repo != "library/ubuntu" {
		t.Errorf("SplitNamespace: %q %q", host, repo)
	}
}

func TestParseRef(t *testing.T) {
	if d, tag, ok := proto.ParseRef("latest"); !ok || d != "" || tag != "latest" {
		t.Errorf("ParseRef(latest) = %q %q %v", d, tag, ok)
	}
	if d, tag, ok := proto.ParseRef(testDigest.String()); !ok || d != testDigest || tag != "" {
		t.Errorf("ParseRef(digest) = %q %q %v", d, tag, ok)
	}
	for _, bad := range []string{"sha512:" + strings.Repeat("a", 128), "sha256:zz", "", "a/b"} {
		if _, _, ok := proto.ParseRef(bad); ok {
			t.Errorf("ParseRef(%q) accepted", bad)
		}
	}
}
