package origin

import (
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/internal/upstream"
)

// Config is the origin's TOML file.
type Config struct {
	// Listen is the HTTP API address (metainfo, blob fallback, health, metrics).
	Listen string `toml:"listen"`
	// Root holds the blob store.
	Root string `toml:"root"`
	// Trackers are tracker base URLs the origin announces its seeds to.
	Trackers []string `toml:"trackers"`
	// PieceLength of the metainfo the origin builds (a power of two); 0
	// picks one by blob size (p2p.PieceLengthFor).
	PieceLength config.ByteSize `toml:"piece_length"`
	// FetchTimeout bounds one upstream blob download.
	FetchTimeout time.Duration `toml:"fetch_timeout"`
	// The disk cache: cache_capacity, gc_high_watermark, gc_low_watermark.
	store.CacheConfig
	// DefaultUpstream is the host of the upstream used for namespaces that
	// name no registry ("library/ubuntu").
	DefaultUpstream string            `toml:"default_upstream"`
	Upstreams       []upstream.Config `toml:"upstream"`
	// AllowAnyRegistry lets the origin fetch, anonymously, from any registry
	// a namespace names whose host matches one of these patterns ("*",
	// "*.example.com", "ghcr.io", "http://registry.lan:5000"), although no
	// [[upstream]] names it. Empty (the default): only [[upstream]] hosts.
	AllowAnyRegistry []string   `toml:"allow_any_registry"`
	P2P              p2p.Config `toml:"p2p"`
	LogLevel         string     `toml:"log_level"`
	// HTTP bounds what one client may cost: header and body sizes, timeouts.
	HTTP httpx.Limits `toml:"http"`
	// TLS is the [tls] table: the certificate this component serves and
	// presents to the others, the CA that verifies them, mutual TLS.
	TLS tlsconf.Config `toml:"tls"`
}

// Defaults.
const (
	DefaultListen       = "0.0.0.0:7610"
	DefaultP2PListen    = "0.0.0.0:7611"
	DefaultRoot         = "/var/lib/shoal/origin"
	DefaultFetchTimeout = 30 * time.Minute
)

// Redacted is the config with credentials masked (for --print-config).
func (c Config) Redacted() any {
	c.Upstreams = upstream.RedactAll(c.Upstreams)
	return c
}

func (c *Config) ApplyDefaults() {
	config.SetDefault(&c.Listen, DefaultListen)
	config.SetDefault(&c.Root, DefaultRoot)
	config.SetDefault(&c.FetchTimeout, DefaultFetchTimeout)
	if len(c.Upstreams) == 0 {
		// With nothing configured, mirror Docker Hub anonymously.
		c.Upstreams = []upstream.Config{{Host: upstream.DockerHub}}
	}
	if len(c.Trackers) == 0 {
		c.Trackers = []string{"http://127.0.0.1:7600"}
	}
	config.SetDefault(&c.DefaultUpstream, c.Upstreams[0].Host)
	c.CacheConfig.ApplyDefaults()
	config.SetDefault(&c.LogLevel, config.DefaultLogLevel)
	c.P2P.ApplyDefaults(DefaultP2PListen, c.Trackers)
	c.HTTP.ApplyDefaults()
	c.TLS.ApplyDefaults()
}

func (c *Config) Validate() error {
	if err := config.CheckAddrPort("listen", c.Listen); err != nil {
		return err
	}
	if c.PieceLength != 0 && c.PieceLength < p2p.MinPieceLength || c.PieceLength > p2p.MaxPieceLength || c.PieceLength&(c.PieceLength-1) != 0 {
		return config.Errorf("piece_length", "want 0 (by blob size) or a power of two from %s to %s, got %s",
			config.ByteSize(p2p.MinPieceLength), config.ByteSize(p2p.MaxPieceLength), c.PieceLength)
	}
	if c.FetchTimeout < time.Second {
		return config.Errorf("fetch_timeout", "want at least 1s, got %s", c.FetchTimeout)
	}
	return config.FirstError(config.CheckURLs("trackers", c.Trackers),
		upstream.ValidateAll(c.Upstreams, c.DefaultUpstream),
		upstream.ValidateAllowAny("allow_any_registry", c.AllowAnyRegistry), c.CacheConfig.Validate(),
		config.CheckLogLevel(c.LogLevel), c.HTTP.Validate("http"), c.P2P.Validate("p2p"), c.TLS.Validate("tls"))
}
