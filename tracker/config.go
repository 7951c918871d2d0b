package tracker

import (
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/tracker/peerstore"
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
	// ExternalURL is the tracker's base URL as BitTorrent clients outside
	// the cluster reach it: the standard torrents it hands out announce to
	// ExternalURL + "/announce". Default: http:// (https:// with a [tls]
	// certificate) and the listen address,
	// with the machine's hostname when listen names no host.
	ExternalURL string `toml:"external_url"`
	// TrustIPParam makes the tracker list a peer at the address in its
	// ip/ipv4 query parameter instead of the connection's remote address.
	TrustIPParam bool `toml:"trust_ip_param"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// PeerStore is where the peer graph lives: "memory" (this process
	// only) or "redis" (shared by every replica that uses the same Redis).
	PeerStore string `toml:"peer_store"`
	// Redis is the server of the "redis" peer store.
	Redis RedisConfig `toml:"redis"`
	// HTTP bounds what one client may cost: header and body sizes, timeouts.
	HTTP httpx.Limits `toml:"http"`
	// TLS is the [tls] table: the certificate this component serves and
	// presents to the others, the CA that verifies them, mutual TLS.
	TLS tlsconf.Config `toml:"tls"`
}

// Peer stores.
const (
	PeerStoreMemory = "memory"
	PeerStoreRedis  = "redis"
)

// RedisConfig is the [redis] table.
type RedisConfig struct {
	// Addr is the server's host:port.
	Addr string `toml:"addr"`
	// Password is sent with AUTH when set; it is never logged or printed.
	Password string `toml:"password"`
	// PasswordFile, instead of Password, is a file holding it (a mounted
	// Secret); read when the config is loaded.
	PasswordFile string `toml:"password_file"`
	// DB is the database number (SELECT).
	DB int `toml:"db"`
	// KeyPrefix starts every key the tracker writes, so that several
	// tracker clusters can share a server.
	KeyPrefix string `toml:"key_prefix"`
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration `toml:"dial_timeout"`
	// OpTimeout bounds one peer store operation, so an announce fails
	// promptly while Redis is unreachable.
	OpTimeout time.Duration `toml:"op_timeout"`
}

// Redacted is the config with the Redis password masked (for --print-config).
func (c Config) Redacted() any {
	if c.Redis.Password != "" {
		c.Redis.Password = "REDACTED"
	}
	return c
}

// ApplyDefaults fills unset keys.
func (c *Config) ApplyDefaults() {
	config.SetDefault(&c.Listen, "0.0.0.0:7600")
	if c.ExternalURL == "" {
		c.ExternalURL = defaultExternalURL(c.scheme(), c.Listen) // "" for port 0: New fills it in
	}
	config.SetDefault(&c.AnnounceInterval, 30*time.Second)
	config.SetDefault(&c.PeerTTL, 3*c.AnnounceInterval)
	config.SetDefault(&c.MaxPeers, 50)
	config.SetDefault(&c.MetainfoCacheSize, 4096)
	config.SetDefault(&c.MetainfoTimeout, 5*time.Minute)
	config.SetDefault(&c.LogLevel, config.DefaultLogLevel)
	config.SetDefault(&c.PeerStore, PeerStoreMemory)
	c.Redis.applyDefaults()
	c.HTTP.ApplyDefaults()
	c.TLS.ApplyDefaults()
}

// scheme is what the tracker serves: https with a [tls] certificate.
func (c *Config) scheme() string {
	if c.TLS.Enabled() {
		return "https"
	}
	return "http"
}

// defaultExternalURL is scheme://listen, with the hostname in place of an
// unspecified host (0.0.0.0, ::); "" for port 0 (not bound yet) or a
// listen address that does not parse (Validate names it).
func defaultExternalURL(scheme, listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil || port == "0" {
		return ""
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host, err = os.Hostname()
		if err != nil || host == "" {
			host = "localhost"
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

func (c *RedisConfig) applyDefaults() {
	config.SetDefault(&c.Addr, "127.0.0.1:6379")
	config.SetDefault(&c.KeyPrefix, peerstore.DefaultRedisKeyPrefix)
	config.SetDefault(&c.DialTimeout, 2*time.Second)
	config.SetDefault(&c.OpTimeout, time.Second)
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
	if c.ExternalURL != "" {
		u, err := url.Parse(c.ExternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return config.Errorf("external_url", "want the base URL clients reach the tracker at, like http://tracker.example:7600, got %q", c.ExternalURL)
		}
	}
	if c.AnnounceInterval < time.Second {
		return config.Errorf("announce_interval", "must be at least 1s, got %s", c.AnnounceInterval)
	}
	if c.PeerTTL < c.AnnounceInterval {
		return config.Errorf("peer_ttl", "must be at least announce_interval (%s), got %s", c.AnnounceInterval, c.PeerTTL)
	}
	if err := config.CheckLogLevel(c.LogLevel); err != nil {
		return err
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
	switch c.PeerStore {
	case PeerStoreMemory, PeerStoreRedis:
	default:
		return config.Errorf("peer_store", "want %q or %q, got %q", PeerStoreMemory, PeerStoreRedis, c.PeerStore)
	}
	if err := config.FirstError(c.HTTP.Validate("http"), c.TLS.Validate("tls")); err != nil {
		return err
	}
	return c.Redis.validate()
}

// validate checks the [redis] table whichever store is chosen, so that a
// mistake shows before the day someone switches to it.
func (c *RedisConfig) validate() error {
	if err := config.ReadSecretFile("redis.password_file", c.PasswordFile, "redis.password", &c.Password); err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return config.Errorf("redis.addr", "want host:port: %v", err)
	}
	if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
		return config.Errorf("redis.addr", "want host:port with a port in 1..65535, got %q", c.Addr)
	}
	if c.DB < 0 {
		return config.Errorf("redis.db", "must not be negative, got %d", c.DB)
	}
	if strings.ContainsAny(c.KeyPrefix, "{}") {
		// The store puts each swarm's keys in one Redis Cluster slot with a
		// {hash tag}; braces in the prefix would become the tag instead.
		return config.Errorf("redis.key_prefix", "must not contain { or }, got %q", c.KeyPrefix)
	}
	if c.DialTimeout <= 0 {
		return config.Errorf("redis.dial_timeout", "must be positive, got %s", c.DialTimeout)
	}
	if c.OpTimeout <= 0 {
		return config.Errorf("redis.op_timeout", "must be positive, got %s", c.OpTimeout)
	}
	return nil
}
