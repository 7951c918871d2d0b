package tracker

import (
	"net"
	"net/url"
	"time"

	"github.com/shoal-dev/shoal/config"
)

// Config is the tracker's TOML configuration.
type Config struct {
	// Listen is the address the HTTP server binds.
	Listen string `toml:"listen"`
	// Origins are the origin base URLs ("http://10.0.0.5:7610"); the ring
	// over them decides which origin owns a digest. Empty is allowed, but
	// then metainfo requests answer 503.
	Origins []string `toml:"origins"`
	// AnnounceInterval is the interval told to announcing peers.
	AnnounceInterval time.Duration `toml:"announce_interval"`
	// PeerTTL is how long a peer stays listed after its last announce.
	PeerTTL time.Duration `toml:"peer_ttl"`
	// MaxPeers caps numwant.
	MaxPeers int `toml:"max_peers"`
	// MetainfoCacheSize is the number of metainfo bodies kept in the LRU.
	MetainfoCacheSize int `toml:"metainfo_cache_size"`
	// MetainfoTimeout bounds one metainfo fetch over all origins; an origin
	// may have to pull a big blob from upstream before it can answer.
	MetainfoTimeout time.Duration `toml:"metainfo_timeout"`
	// TrustIPParam makes the tracker list a peer at the address in its
	// ip/ipv4 query parameter instead of the connection's remote address.
	TrustIPParam bool `toml:"trust_ip_param"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
}

// ApplyDefaults fills unset keys.
func (c *Config) ApplyDefaults() {
	if c.Listen == "" {
		c.Listen = "0.0.0.0:7600"
	}
	if c.AnnounceInterval == 0 {
		c.AnnounceInterval = 30 * time.Second
	}
	if c.PeerTTL == 0 {
		c.PeerTTL = 3 * c.AnnounceInterval
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = 50
	}
	if c.MetainfoCacheSize == 0 {
		c.MetainfoCacheSize = 4096
	}
	if c.MetainfoTimeout == 0 {
		c.MetainfoTimeout = 5 * time.Minute
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

// Validate checks every key, naming the first bad one.
func (c *Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return config.Errorf("listen", "want host:port: %v", err)
	}
	for i, o := range c.Origins {
		u, err := url.Parse(o)
		if err != nil {
			return config.Errorf("origins", "entry %d: %v", i, err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" ||
			(u.Path != "" && u.Path != "/") {
			return config.Errorf("origins", "entry %d %q: want a base URL like http://host:7610", i, o)
		}
	}
	if c.AnnounceInterval < time.Second {
		return config.Errorf("announce_interval", "must be at least 1s, got %s", c.AnnounceInterval)
	}
	if c.PeerTTL < c.AnnounceInterval {
		return config.Errorf("peer_ttl", "must be at least announce_interval (%s), got %s", c.AnnounceInterval, c.PeerTTL)
	}
	if _, err := config.ParseLogLevel(c.LogLevel); err != nil {
		return config.Errorf("log_level", "%v", err)
	}
	if c.MaxPeers < 1 || c.MaxPeers > 10000 {
		return config.Errorf("max_peers", "must be in 1..10000, got %d", c.MaxPeers)
	}
	if c.MetainfoCacheSize < 1 {
		return config.Errorf("metainfo_cache_size", "must be positive, got %d", c.MetainfoCacheSize)
	}
	if c.MetainfoTimeout <= 0 {
		return config.Errorf("metainfo_timeout", "must be positive, got %s", c.MetainfoTimeout)
	}
	return nil
}
