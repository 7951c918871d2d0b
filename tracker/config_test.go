package tracker_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// The peer store keys: memory by default, a [redis] table with defaults,
// and every bad value named by its key.
func TestConfigPeerStore(t *testing.T) {
	cfg, err := loadConfig(t, "")
	if err != nil {
		t.Fatal(err)
	}
	wantRedis := tracker.RedisConfig{Addr: "127.0.0.1:6379", KeyPrefix: "shoal:tracker:", DialTimeout: 2 * time.Second, OpTimeout: time.Second}
	if cfg.PeerStore != "memory" || cfg.Redis != wantRedis {
		t.Fatalf("defaults: peer_store %q, redis %+v; want memory, %+v", cfg.PeerStore, cfg.Redis, wantRedis)
	}
	cfg, err = loadConfig(t, `
peer_store = "redis"
[redis]
addr = "redis.internal:6380"
password = "pw"
db = 3
key_prefix = "kraken:"
dial_timeout = "500ms"
op_timeout = "250ms"
`)
	if err != nil {
		t.Fatal(err)
	}
	wantRedis = tracker.RedisConfig{Addr: "redis.internal:6380", Password: "pw", DB: 3, KeyPrefix: "kraken:",
		DialTimeout: 500 * time.Millisecond, OpTimeout: 250 * time.Millisecond}
	if cfg.PeerStore != "redis" || cfg.Redis != wantRedis {
		t.Fatalf("decoded peer_store %q, redis %+v; want redis, %+v", cfg.PeerStore, cfg.Redis, wantRedis)
	}
	for _, tc := range []struct{ text, key string }{
		{`peer_store = "etcd"`, "peer_store"},
		{`peer_store = "Redis"`, "peer_store"},
		{"[redis]\naddr = \"localhost\"", "redis.addr"},
		{"[redis]\naddr = \":6379\"", "redis.addr"},
		{"[redis]\naddr = \"localhost:0\"", "redis.addr"},
		{"[redis]\naddr = \"localhost:http\"", "redis.addr"},
		{"peer_store = \"redis\"\n[redis]\ndb = -1", "redis.db"},
		{"[redis]\nkey_prefix = \"a{b}:\"", "redis.key_prefix"},
		{"[redis]\ndial_timeout = \"-1s\"", "redis.dial_timeout"},
		{"[redis]\nop_timeout = \"-5ms\"", "redis.op_timeout"},
	} {
		_, err := loadConfig(t, tc.text)
		var ke *config.KeyError
		if !errors.As(err, &ke) || ke.Key != tc.key {
			t.Errorf("%q: got %v, want an error naming %q", tc.text, err, tc.key)
		}
	}
	if _, err := loadConfig(t, "[redis]\nhost = \"x\""); err == nil {
		t.Error("unknown [redis] key accepted")
	}
}

// --print-config shows Redacted: the password masked, nothing else changed,
// the config itself untouched.
func TestConfigRedacted(t *testing.T) {
	cfg := tracker.Config{PeerStore: "redis", Redis: tracker.RedisConfig{Addr: "r:6379", Password: "s3cret", DB: 2}}
	red, ok := cfg.Redacted().(tracker.Config)
	if !ok {
		t.Fatalf("Redacted returned %T", cfg.Redacted())
	}
	if red.Redis.Password == "s3cret" || red.Redis.Password == "" || red.Redis.Addr != "r:6379" || red.Redis.DB != 2 {
		t.Fatalf("Redacted = %+v", red.Redis)
	}
	if cfg.Redis.Password != "s3cret" {
		t.Fatal("Redacted changed its receiver")
	}
	out, err := config.Encode(cfg.Redacted())
	if err != nil || strings.Contains(string(out), "s3cret") {
		t.Fatalf("encoded redacted config leaks the password (%v):\n%s", err, out)
	}
	if (tracker.Config{}).Redacted().(tracker.Config).Redis.Password != "" {
		t.Error("Redacted invented a password")
	}
}
