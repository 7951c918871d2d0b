// Package tlsconf is the [tls] table every role shares: the certificate a
// component serves and presents to the others, the CA bundle it trusts, and
// optional mutual TLS. Certificates are re-read when their files change
// (cert-manager rotates them in place), so servers and clients pick up new
// ones without a restart.
package tlsconf

import (
	"time"

	"github.com/shoal-dev/shoal/config"
)

// Config is the [tls] table.
type Config struct {
	// Cert is the PEM certificate chain this component serves, and
	// presents as its client certificate to other Shoal components.
	Cert string `toml:"cert"`
	// Key is Cert's PEM private key.
	Key string `toml:"key"`
	// CA is a PEM CA bundle: it verifies the Shoal servers this component
	// calls over https, and client certificates when MTLS is on. Empty:
	// the system roots verify servers.
	CA string `toml:"ca"`
	// MTLS makes this component's servers require a client certificate
	// signed by CA.
	MTLS bool `toml:"mtls"`
	// ReloadInterval is how often the files are checked for change.
	ReloadInterval time.Duration `toml:"reload_interval"`
	// AdminNames, if set, restricts admin and write endpoints reached with
	// a client certificate to these identities (a certificate's common
	// name or one of its DNS names). Empty: any certificate CA verified.
	// The bearer token, where one is configured, is accepted either way.
	AdminNames []string `toml:"admin_names"`
}

// DefaultReloadInterval is the default of reload_interval.
const DefaultReloadInterval = 10 * time.Second

// ApplyDefaults fills unset keys.
func (c *Config) ApplyDefaults() {
	config.SetDefault(&c.ReloadInterval, DefaultReloadInterval)
}

// Enabled reports whether the component serves TLS (cert and key set).
func (c Config) Enabled() bool { return c.Cert != "" && c.Key != "" }

// Validate checks the combination of keys; prefix is the table ("tls"; ""
// for bare keys, as command-line flags). The files themselves are read by
// New, when the component starts, so that --print-config works where they
// are not mounted.
func (c *Config) Validate(prefix string) error {
	k := func(name string) string { return key(prefix, name) }
	switch {
	case c.Cert != "" && c.Key == "":
		return config.Errorf(k("key"), "%s is set (%s) but %s is not: a certificate needs its key", k("cert"), c.Cert, k("key"))
	case c.Key != "" && c.Cert == "":
		return config.Errorf(k("cert"), "%s is set (%s) but %s is not", k("key"), c.Key, k("cert"))
	case c.MTLS && c.CA == "":
		return config.Errorf(k("ca"), "%s = true needs %s, the CA bundle that signs client certificates", k("mtls"), k("ca"))
	case c.MTLS && !c.Enabled():
		return config.Errorf(k("mtls"), "%s = true needs %s and %s: mutual TLS is a property of this component's TLS servers", k("mtls"), k("cert"), k("key"))
	case len(c.AdminNames) > 0 && !c.MTLS:
		return config.Errorf(k("admin_names"), "admin identities come from client certificates: set %s = true", k("mtls"))
	case c.ReloadInterval < 100*time.Millisecond:
		return config.Errorf(k("reload_interval"), "want at least 100ms, got %s", c.ReloadInterval)
	}
	for i, n := range c.AdminNames {
		if n == "" {
			return config.Errorf(k("admin_names"), "entry %d is empty", i)
		}
	}
	return nil
}

// key is the name of key k of the table prefix.
func key(prefix, k string) string {
	if prefix == "" {
		return k
	}
	return prefix + "." + k
}
