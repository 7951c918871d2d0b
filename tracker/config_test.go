package tracker_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/tracker"
)

func loadConfig(t *testing.T, text string) (tracker.Config, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tracker.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var cfg tracker.Config
	err := config.Load(path, &cfg)
	return cfg, err
}

// An empty file yields the documented defaults.
func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(t, "")
	if err != nil {
		t.Fatal(err)
	}
	want := tracker.Config{
		Listen: "0.0.0.0:7600", AnnounceInterval: 30 * time.Second, PeerTTL: 90 * time.Second,
		MaxPeers: 50, MetainfoCacheSize: 4096, MetainfoTimeout: 5 * time.Minute,
	}
	if cfg.Listen != want.Listen || cfg.AnnounceInterval != want.AnnounceInterval || cfg.PeerTTL != want.PeerTTL ||
		cfg.MaxPeers != want.MaxPeers || cfg.MetainfoCacheSize != want.MetainfoCacheSize ||
		cfg.MetainfoTimeout != want.MetainfoTimeout || cfg.TrustIPParam || len(cfg.Origins) != 0 {
		t.Fatalf("defaults = %+v, want %+v", cfg, want)
	}
	cfg, err = loadConfig(t, `announce_interval = "10s"`)
	if err != nil || cfg.PeerTTL != 30*time.Second {
		t.Fatalf("peer_ttl should default to 3 x announce_interval: %v %v", cfg.PeerTTL, err)
	}
}

// A full file decodes, and every bad value names its key.
func TestConfigValidate(t *testing.T) {
	cfg, err := loadConfig(t, `
listen = "127.0.0.1:7600"
origins = ["http://10.0.0.1:7610", "https://origin-b:7610/"]
announce_interval = "15s"
peer_ttl = "1m"
max_peers = 80
metainfo_cache_size = 100
metainfo_timeout = "30s"
trust_ip_param = true
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Origins) != 2 || cfg.PeerTTL != time.Minute || cfg.MaxPeers != 80 || !cfg.TrustIPParam {
		t.Fatalf("decoded %+v", cfg)
	}
	for _, tc := range []struct{ text, key string }{
		{`listen = "7600"`, "listen"},
		{`origins = ["10.0.0.1:7610"]`, "origins"},
		{`origins = ["ftp://x"]`, "origins"},
		{`origins = ["http://x:7610/sub?q=1"]`, "origins"},
		{`announce_interval = "500ms"`, "announce_interval"},
		{`announce_interval = "30s"` + "\n" + `peer_ttl = "10s"`, "peer_ttl"},
		{`max_peers = -1`, "max_peers"},
		{`metainfo_cache_size = -5`, "metainfo_cache_size"},
		{`metainfo_timeout = "-1s"`, "metainfo_timeout"},
	} {
		_, err := loadConfig(t, tc.text)
		var ke *config.KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key {
			t.Errorf("%s: got %v, want an error naming %q", tc.text, err, tc.key)
		}
	}
	if _, err := loadConfig(t, `max_peer = 3`); err == nil {
		t.Error("unknown key accepted")
	}
	if _, err := tracker.New(tracker.Config{MaxPeers: -1}, nil); err == nil {
		t.Error("New accepted an invalid config")
	}
}
