// Package upstream talks to the registries Shoal mirrors (any Registry v2
// server). Authentication — anonymous, basic, or bearer tokens obtained and
// reused per repository — is go-containerregistry's transport.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/proto"
)

// DockerHub is the host name images use for Docker Hub.
const DockerHub = "docker.io"

// Config describes one upstream registry ([[upstream]] in the origin file).
type Config struct {
	// Host is the registry as image references name it: "docker.io",
	// "ghcr.io", "registry.local:5000".
	Host string `toml:"host"`
	// URL is where to reach it; default "https://<host>" (Docker Hub:
	// https://registry-1.docker.io). An http:// URL means plain HTTP.
	URL string `toml:"url"`
	// Username and Password for basic auth (also used to obtain bearer tokens).
	Username string `toml:"username"`
	Password string `toml:"password"`
	// Token is a registry bearer token used as-is (instead of a password).
	Token string `toml:"token"`
	// DockerConfig is the path of a Docker config.json whose entry for this
	// host (its "auths", or the credential helper it names) supplies the
	// credentials, as `docker login` left them.
	DockerConfig string `toml:"docker_config"`
}

// dockerAuth reads host's credentials from a Docker config.json. Docker Hub's
// entry is keyed "https://index.docker.io/v1/", as `docker login` writes it.
func dockerAuth(path, host string) (authn.Authenticator, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("docker config: %w", err)
	}
	defer f.Close()
	cf, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: %w", path, err)
	}
	key := host
	if host == DockerHub {
		key = "https://index.docker.io/v1/"
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return nil, fmt.Errorf("docker config %s: credentials for %s: %w", path, host, err)
	}
	if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return nil, fmt.Errorf("docker config %s has no credentials for %s", path, host)
	}
	return authn.FromConfig(authn.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}), nil
}

// Redacted returns a copy safe to print.
func (c Config) Redacted() Config {
	if c.Password != "" {
		c.Password = "REDACTED"
	}
	if c.Token != "" {
		c.Token = "REDACTED"
	}
	return c
}

// Validate checks one entry; key is its TOML path ("upstream[0]").
func (c *Config) Validate(key string) error {
	if c.Host == "" {
		return config.Errorf(key+".host", "must be set")
	}
	if _, err := name.NewRegistry(c.Host); err != nil {
		return config.Errorf(key+".host", "%v", err)
	}
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return config.Errorf(key+".url", "want http(s)://host[:port], got %q", c.URL)
		}
	}
	if c.Token != "" && (c.Username != "" || c.Password != "") {
		return config.Errorf(key+".token", "set either token or username/password, not both")
	}
	if c.DockerConfig != "" {
		if c.Token != "" || c.Username != "" {
			return config.Errorf(key+".docker_config", "set either docker_config or username/password/token, not both")
		}
		if _, err := dockerAuth(c.DockerConfig, c.Host); err != nil {
			return config.Errorf(key+".docker_config", "%v", err)
		}
	}
	if (c.Username == "") != (c.Password == "") {
		return config.Errorf(key+".password", "username and password go together")
	}
	return nil
}

// ValidateAll checks the [[upstream]] entries of a file and its
// default_upstream: each entry, no host twice, the default among them.
func ValidateAll(cfgs []Config, defaultHost string) error {
	seen := map[string]bool{}
	for i, u := range cfgs {
		if err := u.Validate(fmt.Sprintf("upstream[%d]", i)); err != nil {
			return err
		}
		if seen[u.Host] {
			return config.Errorf(fmt.Sprintf("upstream[%d].host", i), "%q is configured twice", u.Host)
		}
		seen[u.Host] = true
	}
	if defaultHost != "" && !seen[defaultHost] {
		return config.Errorf("default_upstream", "%q is not the host of any [[upstream]]", defaultHost)
	}
	return nil
}

// RedactAll is cfgs with every credential masked.
func RedactAll(cfgs []Config) []Config {
	out := make([]Config, len(cfgs))
	for i, u := range cfgs {
		out[i] = u.Redacted()
	}
	return out
}

type registry struct {
	cfg    Config
	name   name.Registry
	auth   authn.Authenticator
	scheme string // of every request: "https" or "http"
}

// Client fetches blobs from the configured upstreams.
type Client struct {
	regs       map[string]*registry
	def        string
	base       http.RoundTripper
	log        *slog.Logger
	transports *lru.Cache[string, http.RoundTripper]
	handshakes singleflight.Group
	allow      []hostPattern // allow_any_registry
}

// New builds a client; defaultHost names the upstream used for namespaces
// without a registry host.
func New(cfgs []Config, defaultHost string, log *slog.Logger, opts ...Option) (*Client, error) {
	c := &Client{regs: map[string]*registry{}, def: defaultHost, log: log}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	c.transports, _ = lru.New[string, http.RoundTripper](1024)
	c.base = &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}
	for _, cfg := range cfgs {
		var opts []name.Option
		host := cfg.Host
		if cfg.URL != "" {
			u, err := url.Parse(cfg.URL)
			if err != nil {
				return nil, fmt.Errorf("upstream %s: url: %w", cfg.Host, err)
			}
			host = u.Host
			if u.Scheme == "http" {
				opts = append(opts, name.Insecure)
			}
		} else if cfg.Host == DockerHub {
			host = "registry-1.docker.io"
		}
		reg, err := name.NewRegistry(host, opts...)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w", cfg.Host, err)
		}
		var auth authn.Authenticator = authn.Anonymous
		switch {
		case cfg.DockerConfig != "":
			if auth, err = dockerAuth(cfg.DockerConfig, cfg.Host); err != nil {
				return nil, fmt.Errorf("upstream %s: %w", cfg.Host, err)
			}
		case cfg.Token != "":
			auth = &authn.Bearer{Token: cfg.Token}
		case cfg.Username != "":
			auth = &authn.Basic{Username: cfg.Username, Password: cfg.Password}
		}
		c.regs[cfg.Host] = &registry{cfg: cfg, name: reg, auth: auth, scheme: reg.Scheme()}
	}
	if _, ok := c.regs[defaultHost]; !ok && defaultHost != "" {
		return nil, fmt.Errorf("default upstream %q is not among the configured upstreams", defaultHost)
	}
	return c, nil
}

// ErrNotFound: the upstream does not have the blob.
var ErrNotFound = errors.New("upstream: not found")

// ErrUnauthorized: the upstream refused our credentials (or lack of them).
var ErrUnauthorized = errors.New("upstream: unauthorized")

// ErrUnknownRegistry: a namespace names a registry that is not configured
// (the error is an *UnknownRegistryError).
var ErrUnknownRegistry = errors.New("upstream: registry not configured")

// ErrInvalidName: a namespace is not a valid repository name.
var ErrInvalidName = errors.New("upstream: invalid repository name")

// Repo is a parsed namespace: which upstream, and the repository there.
type Repo struct {
	Host string // the configured upstream's host key
	Path string // repository path at that upstream
	reg  *registry
}

func (r Repo) String() string { return r.Host + "/" + r.Path }

// Resolve maps a namespace ("library/ubuntu", "ghcr.io/org/app") to an
// upstream and repository, applying Docker Hub's conventions.
func (c *Client) Resolve(ns string) (Repo, error) {
	host, path := c.def, ns
	if i := strings.IndexByte(ns, '/'); i > 0 {
		first := ns[:i]
		if strings.ContainsAny(first, ".:") || first == "localhost" {
			host, path = first, ns[i+1:]
		}
	}
	if host == "index.docker.io" || host == "registry-1.docker.io" {
		host = DockerHub
	}
	if host == DockerHub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	reg, ok := c.regs[host]
	if !ok {
		if reg, ok = c.allowed(host); !ok {
			if _, _, err := parseHost(host); err != nil && host != "" {
				return Repo{}, fmt.Errorf("%w: registry %v", ErrInvalidName, err)
			}
			return Repo{}, c.unknownRegistry(host)
		}
	}
	// go-containerregistry only checks the characters of a repository name,
	// so "..", "/x" or "a//b" would pass and end up in the upstream URL
	// (with our credentials); the distribution spec's grammar rejects them.
	if !proto.RepositoryRegexp.MatchString(path) {
		return Repo{}, fmt.Errorf("%w: %q does not match %s", ErrInvalidName, path, proto.RepositoryRegexp)
	}
	if _, err := name.NewRepository(reg.name.Name()+"/"+path, name.StrictValidation); err != nil {
		return Repo{}, fmt.Errorf("%w: %q: %v", ErrInvalidName, path, err)
	}
	return Repo{Host: reg.cfg.Host, Path: path, reg: reg}, nil
}

// authTimeout bounds the ping and token exchange that set up a transport.
const authTimeout = time.Minute

// transport returns the authenticated transport of r's repository. Requests
// for a repository that has none yet share one handshake (one token),
// instead of each fetching its own.
func (c *Client) transport(ctx context.Context, r Repo) (http.RoundTripper, error) {
	key := r.Host + "/" + r.Path
	if t, ok := c.transports.Get(key); ok {
		return t, nil
	}
	ch := c.handshakes.DoChan(key, func() (any, error) {
		if t, ok := c.transports.Get(key); ok {
			return t, nil
		}
		repo, err := name.NewRepository(r.reg.name.Name()+"/"+r.Path, optsFor(r.reg)...)
		if err != nil {
			return nil, err
		}
		// Shared by every waiter, so not ended by the first one leaving.
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), authTimeout)
		defer cancel()
		t, err := transport.NewWithContext(hctx, r.reg.name, r.reg.auth, c.baseFor(r.reg), []string{repo.Scope(transport.PullScope)})
		if err != nil {
			return nil, classify(err)
		}
		c.transports.Add(key, t)
		return t, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(http.RoundTripper), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func optsFor(reg *registry) []name.Option {
	if reg.scheme == "http" {
		return []name.Option{name.Insecure}
	}
	return nil
}

// GetBlob starts the download of blob d. The caller reads and closes the
// body; size is the Content-Length.
func (c *Client) GetBlob(ctx context.Context, r Repo, d digest.Digest) (io.ReadCloser, int64, error) {
	resp, err := c.do(ctx, http.MethodGet, r, d, 0)
	if err != nil {
		return nil, 0, err
	}
	if resp.ContentLength < 0 {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("upstream %s: blob %s: no Content-Length", r, d)
	}
	return resp.Body, resp.ContentLength, nil
}

// GetBlobFrom fetches blob d from byte from on (a Range request). A registry
// may ignore Range and send the whole blob: off is where the body starts (0
// or from).
func (c *Client) GetBlobFrom(ctx context.Context, r Repo, d digest.Digest, from int64) (body io.ReadCloser, off int64, err error) {
	resp, err := c.do(ctx, http.MethodGet, r, d, from)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode == http.StatusPartialContent {
		var start int64
		if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-", &start); err != nil || start != from {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("upstream %s: blob %s: Content-Range %q for a request from %d", r, d, resp.Header.Get("Content-Range"), from)
		}
		return resp.Body, from, nil
	}
	return resp.Body, 0, nil
}

// HeadBlob returns the blob's size without fetching it.
func (c *Client) HeadBlob(ctx context.Context, r Repo, d digest.Digest) (int64, error) {
	resp, err := c.do(ctx, http.MethodHead, r, d, 0)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.ContentLength, nil
}

func (c *Client) do(ctx context.Context, method string, r Repo, d digest.Digest, from int64) (*http.Response, error) {
	hdr := http.Header{}
	if from > 0 {
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", from))
	}
	return c.request(ctx, method, r, "blobs/"+d.String(), hdr, "blob "+d.String())
}

// classify maps go-containerregistry's auth errors onto ours.
func classify(err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("%w: %v", ErrUnauthorized, err)
	}
	return err
}
