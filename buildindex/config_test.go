package buildindex_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/config"
)

func TestConfigDefaults(t *testing.T) {
	var c buildindex.Config
	if err := config.Load("", &c); err != nil {
		t.Fatal(err)
	}
	want := buildindex.Config{Listen: "0.0.0.0:7620", Root: "/var/lib/shoal/buildindex", Origins: []string{"http://127.0.0.1:7610"},
		TagTTL: 5 * time.Minute, ResolveTimeout: 30 * time.Second, LogLevel: "info"}
	if c.Listen != want.Listen || c.Root != want.Root || len(c.Origins) != 1 || c.Origins[0] != want.Origins[0] ||
		c.TagTTL != want.TagTTL || c.ResolveTimeout != want.ResolveTimeout || c.LogLevel != want.LogLevel {
		t.Fatalf("defaults %+v, want %+v", c, want)
	}
}

// TestConfigBadKeysAreNamed: every bad value names its key.
func TestConfigBadKeysAreNamed(t *testing.T) {
	for _, tc := range []struct{ toml, key string }{
		{`listen = "localhost"`, "listen"},
		{`origins = ["http://a:7610", "ftp://b"]`, "origins[1]"},
		{`origins = ["http://a:7610/x"]`, "origins[0]"},
		{`tag_ttl = "-1s"`, "tag_ttl"},
		{`resolve_timeout = "1ms"`, "resolve_timeout"},
		{`log_level = "loud"`, "log_level"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			var c buildindex.Config
			if err := config.Decode([]byte(tc.toml), &c); err != nil {
				t.Fatal(err)
			}
			c.ApplyDefaults()
			var ke *config.KeyError
			if err := c.Validate(); !errors.As(err, &ke) || ke.Key != tc.key {
				t.Fatalf("%s: error %v, want one naming %q", tc.toml, err, tc.key)
			}
		})
	}
	p := filepath.Join(t.TempDir(), "bi.toml")
	if err := os.WriteFile(p, []byte("tag_tll = \"1m\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var c buildindex.Config
	if err := config.Load(p, &c); err == nil || !strings.Contains(err.Error(), "tag_tll") {
		t.Fatalf("unknown key: %v", err)
	}
}
