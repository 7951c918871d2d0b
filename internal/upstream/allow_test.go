package upstream

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/shoal-dev/shoal/config"
)

func TestAllowAnyRegistryResolve(t *testing.T) {
	const d = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	c, err := New([]Config{{Host: "ghcr.io", Token: "secret"}, {Host: "plain.local", URL: "http://127.0.0.1:5000"}}, "ghcr.io",
		slog.New(slog.DiscardHandler), AllowAny([]string{"*.example.com", "quay.io", "http://registry.lan:5000", "docker.io", "10.1.2.3"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ns      string
		wantURL string // "" = not allowed
	}{
		{"a.example.com/team/app", "https://a.example.com/v2/team/app/blobs/" + d},
		{"a.b.example.com/app", "https://a.b.example.com/v2/app/blobs/" + d},
		{"a.example.com:8443/app", "https://a.example.com:8443/v2/app/blobs/" + d},
		{"A.Example.COM/app", "https://a.example.com/v2/app/blobs/" + d},
		{"example.com/app", ""},
		{"badexample.com/app", ""},
		{"quay.io/org/app", "https://quay.io/v2/org/app/blobs/" + d},
		{"quay.io:5000/org/app", "https://quay.io:5000/v2/org/app/blobs/" + d},
		{"registry.lan:5000/app", "http://registry.lan:5000/v2/app/blobs/" + d},
		{"registry.lan:5001/app", ""},
		{"registry.lan/app", ""},
		{"docker.io/alpine", "https://registry-1.docker.io/v2/library/alpine/blobs/" + d},
		// A private address is https too, unlike for an [[upstream]] entry.
		{"10.1.2.3:5000/app", "https://10.1.2.3:5000/v2/app/blobs/" + d},
		{"other.io/app", ""},
		// Configured hosts keep their own entry (and credentials).
		{"ghcr.io/org/app", "https://ghcr.io/v2/org/app/blobs/" + d},
		{"plain.local/app", "http://127.0.0.1:5000/v2/app/blobs/" + d},
	} {
		r, err := c.Resolve(tc.ns)
		if tc.wantURL == "" {
			if !errors.Is(err, ErrUnknownRegistry) {
				t.Errorf("Resolve(%q) = %v, %v; want ErrUnknownRegistry", tc.ns, r, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Resolve(%q): %v", tc.ns, err)
			continue
		}
		if got := c.apiBase(r) + "blobs/" + d; got != tc.wantURL {
			t.Errorf("Resolve(%q): blob URL %q, want %q", tc.ns, got, tc.wantURL)
		}
		if strings.HasPrefix(tc.ns, "ghcr.io/") != (r.reg.cfg.Token != "") {
			t.Errorf("Resolve(%q): credentials %q: only ghcr.io's own entry has them", tc.ns, r.reg.cfg.Token)
		}
	}
	// Star: every host, every port.
	star, err := New([]Config{{Host: "ghcr.io"}}, "ghcr.io", slog.New(slog.DiscardHandler), AllowAny([]string{"*"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"quay.io/a", "localhost:5000/a", "127.0.0.1:5000/a", "[::1]:5000/a", "x.y.z/a"} {
		if r, err := star.Resolve(ns); err != nil || star.apiBase(r)[:8] != "https://" {
			t.Errorf("* : Resolve(%q) = %v, %v; want an https registry", ns, r, err)
		}
	}
	// An invalid host is an invalid name, not a registry to configure.
	for _, ns := range []string{"a..b/app", "bad-.io/app", "x.io:99999/app", "x.io:/app"} {
		if _, err := star.Resolve(ns); !errors.Is(err, ErrInvalidName) {
			t.Errorf("Resolve(%q) = %v, want ErrInvalidName", ns, err)
		}
	}
}

func TestUnknownRegistryErrorSaysWhatIsConfigured(t *testing.T) {
	c, err := New([]Config{{Host: "ghcr.io"}, {Host: DockerHub}}, DockerHub, slog.New(slog.DiscardHandler),
		AllowAny([]string{"*.example.com"}))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Resolve("upstream.test:5000/team/app")
	var ue *UnknownRegistryError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnknownRegistry) {
		t.Fatalf("Resolve = %v, want an *UnknownRegistryError", err)
	}
	if ue.Host != "upstream.test:5000" || strings.Join(ue.Configured, ",") != "docker.io,ghcr.io" ||
		strings.Join(ue.AllowAny, ",") != "*.example.com" {
		t.Fatalf("error = %+v", ue)
	}
	for _, want := range []string{`"upstream.test:5000"`, "docker.io, ghcr.io", "allow_any_registry: *.example.com"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %s", err, want)
		}
	}
}

func TestValidateAllowAny(t *testing.T) {
	for _, tc := range []struct {
		name     string
		patterns []string
		wantKey  string // "" = valid
	}{
		{"off", nil, ""},
		{"star", []string{"*"}, ""},
		{"list", []string{"*.example.com", "ghcr.io", "registry.lan:5000", "http://10.0.0.5:5000", "https://quay.io", "[::1]:5000", "*:5000"}, ""},
		{"empty pattern", []string{"ghcr.io", ""}, "allow_any_registry[1]"},
		{"path", []string{"ghcr.io/org"}, "allow_any_registry[0]"},
		{"url with path", []string{"https://ghcr.io/"}, "allow_any_registry[0]"},
		{"user", []string{"user@ghcr.io"}, "allow_any_registry[0]"},
		{"ftp scheme", []string{"ftp://ghcr.io"}, "allow_any_registry[0]"},
		{"star inside", []string{"ghcr.*.io"}, "allow_any_registry[0]"},
		{"star suffix", []string{"ghcr.*"}, "allow_any_registry[0]"},
		{"partial star", []string{"*ghcr.io"}, "allow_any_registry[0]"},
		{"bad port", []string{"ghcr.io:0"}, "allow_any_registry[0]"},
		{"port too big", []string{"ghcr.io:70000"}, "allow_any_registry[0]"},
		{"empty port", []string{"ghcr.io:"}, "allow_any_registry[0]"},
		{"space", []string{"ghcr io"}, "allow_any_registry[0]"},
		{"underscore", []string{"my_registry.io"}, "allow_any_registry[0]"},
		{"leading hyphen", []string{"-x.io"}, "allow_any_registry[0]"},
		{"empty label", []string{"x..io"}, "allow_any_registry[0]"},
		{"ipv6 without brackets", []string{"::1"}, "allow_any_registry[0]"},
		{"bad bracket", []string{"[10.0.0.1]"}, "allow_any_registry[0]"},
		{"repeated", []string{"ghcr.io", "quay.io", "GHCR.io"}, "allow_any_registry[2]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateAllowAny("allow_any_registry", tc.patterns)
			if tc.wantKey == "" {
				if err != nil {
					t.Fatalf("ValidateAllowAny(%q): %v", tc.patterns, err)
				}
				if _, err := New(nil, "", slog.New(slog.DiscardHandler), AllowAny(tc.patterns)); err != nil {
					t.Fatalf("New with %q: %v", tc.patterns, err)
				}
				return
			}
			var ke *config.KeyError
			if !errors.As(err, &ke) || ke.Key != tc.wantKey {
				t.Fatalf("ValidateAllowAny(%q) = %v, want a *config.KeyError for %s", tc.patterns, err, tc.wantKey)
			}
			if !strings.Contains(err.Error(), tc.wantKey) {
				t.Fatalf("message %q does not name %s", err, tc.wantKey)
			}
		})
	}
}
