package agent

import (
	"os"
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/internal/upstream"
)

// Config is the agent's TOML file.
type Config struct {
	// Listen is the registry API for the node's container runtime. It binds
	// loopback by default: the mirror is for this node only.
	Listen string `toml:"listen"`
	// AdminListen serves /health, /readiness and /metrics.
	AdminListen string `toml:"admin_listen"`
	// Root holds the blob cache.
	Root string `toml:"root"`
	// Trackers are tracker base URLs, tried in order.
	Trackers []string `toml:"trackers"`
	// Origins are the origin base URLs (the same ring the trackers use):
	// manifests by digest come from them.
	Origins []string `toml:"origins"`
	// BuildIndex are build-index base URLs, tried in order, that resolve
	// tags to digests. Empty: tags are resolved by the origins directly.
	BuildIndex []string `toml:"buildindex"`
	// NodeID names the agent in its heartbeats to the build-index, and so
	// in preheat jobs' scopes and progress (default: the hostname).
	NodeID string `toml:"node_id"`
	// MetainfoTimeout bounds asking the tracker for a blob's metainfo (the
	// origin may first fetch the whole blob from upstream).
	MetainfoTimeout time.Duration `toml:"metainfo_timeout"`
	// StallTimeout is how long a swarm download may go without a new
	// verified piece before the agent turns to the fallback (or fails).
	StallTimeout time.Duration `toml:"stall_timeout"`
	// PullGrace is how long a download goes on after its last client left.
	// A client that reads a blob in ranged chunks on connections of their
	// own (containerd 2.x's parallel layer fetch) leaves between chunks;
	// the next chunk joins the same download instead of starting over.
	PullGrace time.Duration `toml:"pull_grace"`
	// MaxDownloads caps the blobs downloaded at once; more requests wait.
	MaxDownloads int `toml:"max_downloads"`
	// DisableFallback stops the agent from fetching a blob (or the rest of
	// one) from an origin over HTTP when no tracker answers or the swarm
	// stalls; the pull then fails instead.
	DisableFallback bool `toml:"disable_fallback"`
	// Upstreams, if any, let the agent fetch a blob straight from its
	// registry when every origin has failed (the last resort of the
	// fallback chain); same keys as the origin's [[upstream]]. None: no
	// upstream fallback, and the agent holds no registry credentials.
	Upstreams []upstream.Config `toml:"upstream"`
	// DefaultUpstream is the upstream of namespaces without a registry host
	// (default: the first [[upstream]]).
	DefaultUpstream string `toml:"default_upstream"`
	// The disk cache: cache_capacity, gc_high_watermark, gc_low_watermark.
	store.CacheConfig
	P2P      p2p.Config `toml:"p2p"`
	LogLevel string     `toml:"log_level"`
	// HTTP bounds what one client may cost: header and body sizes, timeouts.
	HTTP httpx.Limits `toml:"http"`
	// TLS is the [tls] table: the certificate this component serves and
	// presents to the others, the CA that verifies them, mutual TLS.
	TLS tlsconf.Config `toml:"tls"`
}

// Defaults.
const (
	DefaultListen          = "127.0.0.1:7650"
	DefaultP2PListen       = "0.0.0.0:7651"
	DefaultAdminListen     = "127.0.0.1:7652"
	DefaultRoot            = "/var/lib/shoal/agent"
	DefaultMetainfoTimeout = 5 * time.Minute
	DefaultStallTimeout    = 2 * time.Minute
	DefaultMaxDownloads    = 32
	DefaultPullGrace       = 30 * time.Second
)

// Default cluster addresses: everything on one host.
var (
	DefaultTrackers = []string{"http://127.0.0.1:7600"}
	DefaultOrigins  = []string{"http://127.0.0.1:7610"}
)

// Redacted is the config with upstream credentials masked (for --print-config).
func (c Config) Redacted() any {
	c.Upstreams = upstream.RedactAll(c.Upstreams)
	return c
}

func (c *Config) ApplyDefaults() {
	config.SetDefault(&c.Listen, DefaultListen)
	config.SetDefault(&c.AdminListen, DefaultAdminListen)
	config.SetDefault(&c.Root, DefaultRoot)
	if len(c.Trackers) == 0 {
		c.Trackers = DefaultTrackers
	}
	if len(c.Origins) == 0 {
		c.Origins = DefaultOrigins
	}
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
	}
	config.SetDefault(&c.MetainfoTimeout, DefaultMetainfoTimeout)
	config.SetDefault(&c.StallTimeout, DefaultStallTimeout)
	config.SetDefault(&c.MaxDownloads, DefaultMaxDownloads)
	config.SetDefault(&c.PullGrace, DefaultPullGrace)
	if c.DefaultUpstream == "" && len(c.Upstreams) > 0 {
		c.DefaultUpstream = c.Upstreams[0].Host
	}
	c.CacheConfig.ApplyDefaults()
	config.SetDefault(&c.LogLevel, config.DefaultLogLevel)
	c.P2P.ApplyDefaults(DefaultP2PListen, c.Trackers)
	c.HTTP.ApplyDefaults()
	c.TLS.ApplyDefaults()
}

func (c *Config) Validate() error {
	if err := config.FirstError(config.CheckAddrPort("listen", c.Listen), config.CheckAddrPort("admin_listen", c.AdminListen),
		config.CheckURLs("trackers", c.Trackers), config.CheckURLs("origins", c.Origins),
		config.CheckURLs("buildindex", c.BuildIndex)); err != nil {
		return err
	}
	if c.NodeID == "" || len(c.NodeID) > 253 {
		return config.Errorf("node_id", "want 1..253 characters (the hostname is unknown), got %q", c.NodeID)
	}
	if c.MetainfoTimeout < time.Second {
		return config.Errorf("metainfo_timeout", "want at least 1s, got %s", c.MetainfoTimeout)
	}
	if c.MaxDownloads < 1 || c.MaxDownloads > 4096 {
		return config.Errorf("max_downloads", "want 1..4096, got %d", c.MaxDownloads)
	}
	if c.PullGrace < 10*time.Millisecond || c.PullGrace > 24*time.Hour {
		return config.Errorf("pull_grace", "want 10ms..24h, got %s", c.PullGrace)
	}
	if c.StallTimeout < time.Second {
		return config.Errorf("stall_timeout", "want at least 1s, got %s", c.StallTimeout)
	}
	return config.FirstError(upstream.ValidateAll(c.Upstreams, c.DefaultUpstream), c.CacheConfig.Validate(),
		config.CheckLogLevel(c.LogLevel), c.HTTP.Validate("http"), c.P2P.Validate("p2p"), c.TLS.Validate("tls"))
}
