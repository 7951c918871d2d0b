package buildindex

import (
	"fmt"
	"net/url"
	"time"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/tlsconf"
)

// Config is the build-index's TOML file.
type Config struct {
	// Listen is the HTTP API address.
	Listen string `toml:"listen"`
	// Root holds the tag store (<root>/tags/...).
	Root string `toml:"root"`
	// Origins are origin base URLs ("http://10.0.0.5:7610"). A tag is
	// resolved by the origin its namespace and tag pick on the ring, then
	// by the next ones if that fails.
	Origins []string `toml:"origins"`
	// TagTTL is how long a resolved tag is trusted before it is resolved
	// again (tags are mutable upstream).
	TagTTL time.Duration `toml:"tag_ttl"`
	// ResolveTimeout bounds one resolution (or tag list) over all origins.
	ResolveTimeout time.Duration `toml:"resolve_timeout"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// AdminToken, if set, is the bearer token that write endpoints (PUT of a
	// tag) require; reads stay open. It is never logged or printed.
	AdminToken string `toml:"admin_token"`
	// AdminTokenFile, instead of AdminToken, is a file holding it (a
	// mounted Secret); read when the config is loaded.
	AdminTokenFile string `toml:"admin_token_file"`
	// AdminTokenHeader is a header that may carry the admin token too
	// (Harbor's "custom header" auth mode).
	AdminTokenHeader string `toml:"admin_token_header"`
	// AgentTTL: an agent without a heartbeat for this long is gone (its
	// preheat tasks fail).
	AgentTTL time.Duration `toml:"agent_ttl"`
	// PreheatConcurrency is how many agents of one job pull at once when
	// the job does not say.
	PreheatConcurrency int `toml:"preheat_concurrency"`
	// HTTP bounds what one client may cost: header and body sizes, timeouts.
	HTTP httpx.Limits `toml:"http"`
	// TLS is the [tls] table: the certificate this component serves and
	// presents to the others, the CA that verifies them, mutual TLS.
	TLS tlsconf.Config `toml:"tls"`
}

// Defaults.
const (
	DefaultListen         = "0.0.0.0:7620"
	DefaultRoot           = "/var/lib/shoal/buildindex"
	DefaultOrigin         = "http://127.0.0.1:7610"
	DefaultTagTTL         = 5 * time.Minute
	DefaultResolveTimeout = 30 * time.Second
	DefaultAdminHeader    = "X-Shoal-Admin-Token"
	DefaultAgentTTL       = 30 * time.Second
	DefaultPreheatConc    = 16
)

// ApplyDefaults fills unset keys.
// Redacted is the config with the admin token masked (for --print-config).
func (c Config) Redacted() any {
	if c.AdminToken != "" {
		c.AdminToken = "REDACTED"
	}
	return c
}

func (c *Config) ApplyDefaults() {
	config.SetDefault(&c.Listen, DefaultListen)
	config.SetDefault(&c.Root, DefaultRoot)
	if len(c.Origins) == 0 {
		c.Origins = []string{DefaultOrigin}
	}
	config.SetDefault(&c.TagTTL, DefaultTagTTL)
	config.SetDefault(&c.ResolveTimeout, DefaultResolveTimeout)
	config.SetDefault(&c.LogLevel, config.DefaultLogLevel)
	config.SetDefault(&c.AdminTokenHeader, DefaultAdminHeader)
	config.SetDefault(&c.AgentTTL, DefaultAgentTTL)
	config.SetDefault(&c.PreheatConcurrency, DefaultPreheatConc)
	c.HTTP.ApplyDefaults()
	c.TLS.ApplyDefaults()
}

// Validate checks every key, naming the first bad one.
func (c *Config) Validate() error {
	if err := config.CheckAddrPort("listen", c.Listen); err != nil {
		return err
	}
	if err := config.ReadSecretFile("admin_token_file", c.AdminTokenFile, "admin_token", &c.AdminToken); err != nil {
		return err
	}
	for i, o := range c.Origins {
		key := fmt.Sprintf("origins[%d]", i)
		if err := config.CheckHTTPURL(o); err != nil {
			return config.Errorf(key, "%v", err)
		}
		if u, _ := url.Parse(o); (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			return config.Errorf(key, "want a base URL like http://host:7610, got %q", o)
		}
	}
	if c.TagTTL < 0 {
		return config.Errorf("tag_ttl", "must not be negative, got %s", c.TagTTL)
	}
	if c.ResolveTimeout < 100*time.Millisecond {
		return config.Errorf("resolve_timeout", "want at least 100ms, got %s", c.ResolveTimeout)
	}
	if c.AgentTTL < 3*time.Second {
		return config.Errorf("agent_ttl", "want at least 3s, got %s", c.AgentTTL)
	}
	if c.PreheatConcurrency < 1 || c.PreheatConcurrency > 100000 {
		return config.Errorf("preheat_concurrency", "want 1..100000, got %d", c.PreheatConcurrency)
	}
	return config.FirstError(config.CheckLogLevel(c.LogLevel), c.HTTP.Validate("http"), c.TLS.Validate("tls"))
}
