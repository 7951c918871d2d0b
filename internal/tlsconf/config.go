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

// Validate checks the combination of keys; prefix is the table ("tls").
// The files themselves are read by New, when the component starts, so that
// --print-config works where they are not mounted.
func (c *Config) Validate(prefix string) error {
	switch {
	case c.Cert != "" && c.Key == "":
		return config.Errorf(prefix+".key", "%s.cert is set (%s) but %s.key is not: a certificate needs its key", prefix, c.Cert, prefix)
	case c.Key != "" && c.Cert == "":
		return config.Errorf(prefix+".cert", "%s.key is set (%s) but %s.cert is not", prefix, c.Key, prefix)
	case c.MTLS && c.CA == "":
		return config.Errorf(prefix+".ca", "%s.mtls = true needs %s.ca, the CA bundle that signs client certificates", prefix, prefix)
	case c.MTLS && !c.Enabled():
		return config.Errorf(prefix+".mtls", "%s.mtls = true needs %s.cert and %s.key: mutual TLS is a property of this component's TLS servers", prefix, prefix, prefix)
	case len(c.AdminNames) > 0 && !c.MTLS:
		return config.Errorf(prefix+".admin_names", "admin identities come from client certificates: set %s.mtls = true", prefix)
	case c.ReloadInterval < 100*time.Millisecond:
		return config.Errorf(prefix+".reload_interval", "want at least 100ms, got %s", c.ReloadInterval)
	}
	for i, n := range c.AdminNames {
		if n == "" {
			return config.Errorf(prefix+".admin_names", "entry %d is empty", i)
		}
	}
	return nil
}
