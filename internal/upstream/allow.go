package upstream

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/shoal-dev/shoal/config"
)

// allow_any_registry: registries a client may reach although no [[upstream]]
// names them, anonymously, when their host matches one of a list of
// patterns (Dragonfly's proxyAllRegistries, narrowed to a list). Each
// pattern is
//
//	[http://|https://]HOST[:PORT]
//
// HOST is "*" (any host), "*.example.com" (any host below example.com, at
// any depth; not example.com itself) or one host name or IP address
// ("[::1]" for IPv6). Without PORT any port matches, and no port; with it,
// only that port. The scheme is https unless the pattern starts with
// http:// (plain HTTP, as an [[upstream]] url = "http://..." means), and
// unlike for [[upstream]] entries, no address is taken to speak plain HTTP
// because it is private or loopback (go-containerregistry tries plain HTTP
// there after https: see httpsOnly). The first matching pattern decides.

// hostPattern is one parsed allow_any_registry entry.
type hostPattern struct {
	raw    string
	scheme string // "https" or "http"
	host   string // "*", ".example.com" (a suffix) or an exact lower-case host
	port   string // "" matches any port
}

// parsePattern reads one allow_any_registry entry.
func parsePattern(s string) (hostPattern, error) {
	p := hostPattern{raw: s, scheme: "https"}
	rest := s
	if scheme, after, ok := strings.Cut(s, "://"); ok {
		if scheme != "http" && scheme != "https" {
			return p, fmt.Errorf("%q: the scheme may be http:// or https://, not %s://", s, scheme)
		}
		p.scheme, rest = scheme, after
	}
	if strings.ContainsAny(rest, "/?#@") {
		return p, fmt.Errorf("%q: want [http://]HOST[:PORT] (HOST \"*\", \"*.example.com\" or a host), not a URL with a path or user", s)
	}
	host, port, err := splitHostPort(strings.ToLower(rest))
	if err != nil {
		return p, fmt.Errorf("%q: %v", s, err)
	}
	p.port = port
	switch {
	case host == "*":
		p.host = host
	case strings.HasPrefix(host, "*."):
		if err := checkHostname(host[2:]); err != nil {
			return p, fmt.Errorf("%q: %v", s, err)
		}
		p.host = host[1:]
	case strings.Contains(host, "*"):
		return p, fmt.Errorf("%q: \"*\" may stand only for the whole host or its leading labels (\"*.example.com\")", s)
	default:
		if err := checkHostname(host); err != nil {
			return p, fmt.Errorf("%q: %v", s, err)
		}
		p.host = host
	}
	return p, nil
}

// match reports whether registry host (lower case, split from its port)
// matches p.
func (p hostPattern) match(host, port string) bool {
	if p.port != "" && p.port != port {
		return false
	}
	switch {
	case p.host == "*":
		return true
	case strings.HasPrefix(p.host, "."):
		return strings.HasSuffix(host, p.host)
	}
	return host == p.host
}

// splitHostPort splits "host[:port]" ("[::1]:5000" for IPv6); the port, if
// any, must be 1..65535.
func splitHostPort(s string) (host, port string, err error) {
	host = s
	if i := strings.LastIndexByte(s, ':'); i >= 0 && i > strings.LastIndexByte(s, ']') {
		host, port = s[:i], s[i+1:]
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' || port[0] == '+' {
			return "", "", fmt.Errorf("port %q: want 1..65535", port)
		}
	}
	if host == "" {
		return "", "", errors.New("no host")
	}
	return host, port, nil
}

// checkHostname accepts a DNS name, an IPv4 address or a bracketed IPv6
// address.
func checkHostname(h string) error {
	if strings.HasPrefix(h, "[") {
		a, err := netip.ParseAddr(strings.TrimSuffix(h[1:], "]"))
		if err != nil || !strings.HasSuffix(h, "]") || !a.Is6() {
			return fmt.Errorf("host %q: want an IPv6 address in brackets", h)
		}
		return nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host %q: longer than 253 characters", h)
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			strings.IndexFunc(label, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') }) >= 0 {
			return fmt.Errorf("host %q: not a DNS name or IP address", h)
		}
	}
	return nil
}

// parseHost checks a registry host ("ghcr.io", "registry.local:5000") and
// splits it, in lower case, into host name and port.
func parseHost(host string) (string, string, error) {
	hn, port, err := splitHostPort(strings.ToLower(host))
	if err == nil {
		err = checkHostname(hn)
	}
	return hn, port, err
}

// ValidateAllowAny checks allow_any_registry; key is its TOML key.
func ValidateAllowAny(key string, patterns []string) error {
	seen := map[hostPattern]int{}
	for i, s := range patterns {
		k := fmt.Sprintf("%s[%d]", key, i)
		p, err := parsePattern(s)
		if err != nil {
			return config.Errorf(k, "%v", err)
		}
		p.raw = ""
		if j, dup := seen[p]; dup {
			return config.Errorf(k, "%q repeats %s[%d]", s, key, j)
		}
		seen[p] = i
	}
	return nil
}

// Option adjusts a Client.
type Option func(*Client) error

// AllowAny lets the client reach, anonymously, every registry whose host
// matches one of patterns (allow_any_registry) when no [[upstream]] names it.
func AllowAny(patterns []string) Option {
	return func(c *Client) error {
		for _, s := range patterns {
			p, err := parsePattern(s)
			if err != nil {
				return fmt.Errorf("allow_any_registry: %w", err)
			}
			c.allow = append(c.allow, p)
		}
		return nil
	}
}

// allowed returns the registry of host when an allow_any_registry pattern
// matches it; host is already known to be no configured upstream.
func (c *Client) allowed(host string) (*registry, bool) {
	if len(c.allow) == 0 {
		return nil, false
	}
	hn, port, err := parseHost(host)
	if err != nil {
		return nil, false
	}
	for _, p := range c.allow {
		if !p.match(hn, port) {
			continue
		}
		host = strings.ToLower(host)
		target := host
		if host == DockerHub {
			target = "registry-1.docker.io"
		}
		var opts []name.Option
		if p.scheme == "http" {
			opts = append(opts, name.Insecure)
		}
		reg, err := name.NewRegistry(target, opts...)
		if err != nil {
			return nil, false
		}
		return &registry{cfg: Config{Host: host}, name: reg, auth: authn.Anonymous, scheme: p.scheme}, true
	}
	return nil, false
}

// UnknownRegistryError: a namespace names a registry that no [[upstream]]
// configures and no allow_any_registry pattern matches. It is
// ErrUnknownRegistry, with what the client knows, so that the role that
// answers can say how to fix it.
type UnknownRegistryError struct {
	Host       string   // the registry the namespace names ("" when there is no default upstream)
	Configured []string // hosts of the [[upstream]] entries, sorted
	AllowAny   []string // the allow_any_registry patterns, as configured
}

func (e *UnknownRegistryError) Error() string {
	allow := "off"
	if len(e.AllowAny) > 0 {
		allow = strings.Join(e.AllowAny, ", ")
	}
	return fmt.Sprintf("%v: %q (configured: %s; allow_any_registry: %s)", ErrUnknownRegistry, e.Host,
		strings.Join(e.Configured, ", "), allow)
}

// Is makes errors.Is(err, ErrUnknownRegistry) hold.
func (e *UnknownRegistryError) Is(target error) bool { return target == ErrUnknownRegistry }

func (c *Client) unknownRegistry(host string) *UnknownRegistryError {
	e := &UnknownRegistryError{Host: host, Configured: make([]string, 0, len(c.regs))}
	for h := range c.regs {
		e.Configured = append(e.Configured, h)
	}
	slices.Sort(e.Configured)
	for _, p := range c.allow {
		e.AllowAny = append(e.AllowAny, p.raw)
	}
	return e
}

// httpsOnly refuses plain HTTP to one registry host. go-containerregistry
// pings a loopback or private registry over https and plain HTTP at once
// and then speaks whichever answered; a registry allowed without http://
// must be reached over https or not at all.
type httpsOnly struct {
	host  string
	inner http.RoundTripper
}

func (t httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && strings.EqualFold(req.URL.Host, t.host) {
		return nil, fmt.Errorf("plain HTTP to %s refused: its allow_any_registry pattern does not say http://", t.host)
	}
	return t.inner.RoundTrip(req)
}

// baseFor is the transport under r's authentication.
func (c *Client) baseFor(reg *registry) http.RoundTripper {
	if reg.scheme == "https" && reg.name.Scheme() == "http" {
		return httpsOnly{host: reg.name.RegistryStr(), inner: c.base}
	}
	return c.base
}
