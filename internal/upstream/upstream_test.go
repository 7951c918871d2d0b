package upstream

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/config"
)

func newClient(t *testing.T, def string, cfgs ...Config) *Client {
	t.Helper()
	c, err := New(cfgs, def, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestResolve(t *testing.T) {
	hub := Config{Host: DockerHub}
	local := Config{Host: "127.0.0.1:5000", URL: "http://127.0.0.1:5000"}
	ghcr := Config{Host: "ghcr.io"}
	lh := Config{Host: "localhost:5000", URL: "http://localhost:5000"}
	lhBare := Config{Host: "localhost"}
	for _, tc := range []struct {
		name     string
		def      string
		ns       string
		wantHost string
		wantPath string
		wantErr  error
	}{
		{"hub default, official image", DockerHub, "ubuntu", DockerHub, "library/ubuntu", nil},
		{"hub default, library explicit", DockerHub, "library/ubuntu", DockerHub, "library/ubuntu", nil},
		{"hub default, user repo", DockerHub, "grafana/grafana", DockerHub, "grafana/grafana", nil},
		{"hub named, official image", "ghcr.io", "docker.io/alpine", DockerHub, "library/alpine", nil},
		{"hub named, user repo", "ghcr.io", "docker.io/bitnami/redis", DockerHub, "bitnami/redis", nil},
		{"index.docker.io alias", "ghcr.io", "index.docker.io/busybox", DockerHub, "library/busybox", nil},
		{"registry-1.docker.io alias", "ghcr.io", "registry-1.docker.io/nginx", DockerHub, "library/nginx", nil},
		{"hub default, deep path", DockerHub, "org/team/app", DockerHub, "org/team/app", nil},
		{"named host with dot", DockerHub, "ghcr.io/org/app", "ghcr.io", "org/app", nil},
		{"named host with port", DockerHub, "127.0.0.1:5000/test/blob", "127.0.0.1:5000", "test/blob", nil},
		{"localhost with port", DockerHub, "localhost:5000/app", "localhost:5000", "app", nil},
		{"bare localhost", DockerHub, "localhost/app", "localhost", "app", nil},
		{"non-hub default keeps single name", "127.0.0.1:5000", "app", "127.0.0.1:5000", "app", nil},
		{"non-hub default, no library prefix", "127.0.0.1:5000", "library/app", "127.0.0.1:5000", "library/app", nil},
		{"first part without dot is a path", "127.0.0.1:5000", "team/app", "127.0.0.1:5000", "team/app", nil},
		{"separators", "127.0.0.1:5000", "a__b/c--d/e.f_g", "127.0.0.1:5000", "a__b/c--d/e.f_g", nil},
		{"triple underscore", "127.0.0.1:5000", "a___b", "", "", ErrInvalidName},
		{"dot segment", "127.0.0.1:5000", "team/../admin", "", "", ErrInvalidName},
		{"unknown named registry", DockerHub, "quay.io/org/app", "", "", ErrUnknownRegistry},
		{"unknown port", DockerHub, "127.0.0.1:6000/app", "", "", ErrUnknownRegistry},
		{"no default upstream", "", "library/ubuntu", "", "", ErrUnknownRegistry},
		{"upper case", DockerHub, "Library/Ubuntu", "", "", ErrInvalidName},
		{"empty path after host", DockerHub, "ghcr.io/", "", "", ErrInvalidName},
		{"leading slash", DockerHub, "/ubuntu", "", "", ErrInvalidName},
		{"double slash", DockerHub, "library//ubuntu", "", "", ErrInvalidName},
		{"trailing slash", DockerHub, "library/ubuntu/", "", "", ErrInvalidName},
		{"space", DockerHub, "library/ub untu", "", "", ErrInvalidName},
		{"tag in namespace", DockerHub, "library/ubuntu:22.04", "", "", ErrInvalidName},
		{"digest in namespace", DockerHub, "library/ubuntu@sha256:abc", "", "", ErrInvalidName},
		{"dots only", "127.0.0.1:5000", "..", "", "", ErrInvalidName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgs := []Config{hub, local, ghcr, lh, lhBare}
			c := newClient(t, tc.def, cfgs...)
			got, err := c.Resolve(tc.ns)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Resolve(%q) = %+v, %v; want error %v", tc.ns, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve(%q): %v", tc.ns, err)
			}
			if got.Host != tc.wantHost || got.Path != tc.wantPath {
				t.Fatalf("Resolve(%q) = %s %s, want %s %s", tc.ns, got.Host, got.Path, tc.wantHost, tc.wantPath)
			}
			if got.String() != tc.wantHost+"/"+tc.wantPath {
				t.Fatalf("String() = %q", got.String())
			}
		})
	}
}

func TestBlobURL(t *testing.T) {
	c := newClient(t, DockerHub,
		Config{Host: DockerHub},
		Config{Host: "plain.local", URL: "http://127.0.0.1:5000"},
		Config{Host: "ghcr.io"})
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	for ns, want := range map[string]string{
		"ubuntu":               "https://registry-1.docker.io/v2/library/ubuntu/blobs/" + d,
		"plain.local/team/app": "http://127.0.0.1:5000/v2/team/app/blobs/" + d,
		"ghcr.io/org/app":      "https://ghcr.io/v2/org/app/blobs/" + d,
	} {
		r, err := c.Resolve(ns)
		if err != nil {
			t.Fatalf("Resolve(%q): %v", ns, err)
		}
		if got := c.apiBase(r) + "blobs/" + d; got != want {
			t.Errorf("blob URL of %q = %q, want %q", ns, got, want)
		}
	}
}

func TestNewRejectsUnknownDefault(t *testing.T) {
	if _, err := New([]Config{{Host: "ghcr.io"}}, "quay.io", slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("New accepted a default upstream that is not configured")
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantKey string // "" = valid
	}{
		{"minimal", Config{Host: "ghcr.io"}, ""},
		{"http url", Config{Host: "r.local:5000", URL: "http://127.0.0.1:5000"}, ""},
		{"https url", Config{Host: "r.local", URL: "https://mirror.example.com"}, ""},
		{"basic auth", Config{Host: "ghcr.io", Username: "u", Password: "p"}, ""},
		{"token", Config{Host: "ghcr.io", Token: "t"}, ""},
		{"no host", Config{}, "upstream[3].host"},
		{"bad host", Config{Host: "not a host"}, "upstream[3].host"},
		{"host with path", Config{Host: "ghcr.io/org"}, "upstream[3].host"},
		{"url without scheme", Config{Host: "ghcr.io", URL: "ghcr.io"}, "upstream[3].url"},
		{"url with ftp scheme", Config{Host: "ghcr.io", URL: "ftp://ghcr.io"}, "upstream[3].url"},
		{"url without host", Config{Host: "ghcr.io", URL: "https://"}, "upstream[3].url"},
		{"unparsable url", Config{Host: "ghcr.io", URL: "http://[::1"}, "upstream[3].url"},
		{"token and username", Config{Host: "ghcr.io", Token: "t", Username: "u", Password: "p"}, "upstream[3].token"},
		{"token and password", Config{Host: "ghcr.io", Token: "t", Password: "p"}, "upstream[3].token"},
		{"username alone", Config{Host: "ghcr.io", Username: "u"}, "upstream[3].password"},
		{"password alone", Config{Host: "ghcr.io", Password: "p"}, "upstream[3].password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate("upstream[3]")
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var ke *config.KeyError
			if !errors.As(err, &ke) {
				t.Fatalf("Validate = %v, want a *config.KeyError for %s", err, tc.wantKey)
			}
			if ke.Key != tc.wantKey {
				t.Fatalf("Validate names key %q (%v), want %q", ke.Key, err, tc.wantKey)
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("message %q does not name %s", err, tc.wantKey)
			}
		})
	}
}

func TestRedacted(t *testing.T) {
	c := Config{Host: "ghcr.io", Username: "u", Password: "hunter2", Token: "tok"}
	r := c.Redacted()
	if r.Password == "hunter2" || r.Token == "tok" || r.Username != "u" {
		t.Fatalf("Redacted = %+v", r)
	}
	if c.Password != "hunter2" {
		t.Fatal("Redacted changed its receiver")
	}
	if (Config{Host: "ghcr.io"}).Redacted().Password != "" {
		t.Fatal("Redacted invented a password")
	}
}
