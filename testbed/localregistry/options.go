package localregistry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/distribution/distribution/v3/configuration"
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd" // access controller "htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"    // access controller "token"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/time/rate"

	"github.com/shoal-dev/shoal/internal/httpx"
)

// Options shape a registry started with StartWithOptions.
type Options struct {
	// UploadRate, if > 0, caps the bytes per second the registry sends in all.
	UploadRate int64
	// Auth is distribution's auth section: {"htpasswd": {"realm", "path"}}
	// or {"token": {"realm", "service", "issuer", "rootcertbundle"}}.
	// Empty means anonymous access.
	Auth configuration.Auth
}

// StartWithOptions serves a registry storing into dir on addr ("127.0.0.1:0").
func StartWithOptions(dir, addr string, opts Options, log *slog.Logger) (*Registry, error) {
	logrus.SetOutput(io.Discard) // distribution logs through the global logrus
	cfg := &configuration.Configuration{}
	cfg.Storage = configuration.Storage{
		"filesystem":  configuration.Parameters{"rootdirectory": dir},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
		"delete":      configuration.Parameters{"enabled": true},
	}
	cfg.Auth = opts.Auth
	cfg.Log.AccessLog.Disabled = true
	cfg.Log.Level = "error"
	// NewApp panics on a bad auth section; report it as an error instead.
	app, err := newApp(cfg)
	if err != nil {
		return nil, fmt.Errorf("local registry: %w", err)
	}
	r := &Registry{handler: app, blobGets: map[string]int{}}
	if opts.UploadRate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(opts.UploadRate), max(int(opts.UploadRate/20), 64<<10))
	}
	srv, err := httpx.Listen(addr, r, log, httpx.Limits{MaxBodyBytes: 1 << 40}) // pushes carry blobs
	if err != nil {
		return nil, fmt.Errorf("local registry: %w", err)
	}
	r.srv = srv
	return r, nil
}

func newApp(cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("configure registry: %v", p)
		}
	}()
	return handlers.NewApp(context.Background(), cfg), nil
}

// PushBlobAs is PushBlob with credentials, for a registry that requires them.
func (r *Registry) PushBlobAs(ctx context.Context, repo string, data []byte, auth authn.Authenticator) (digest.Digest, error) {
	l := static.NewLayer(data, types.OCIUncompressedLayer)
	ref, err := name.NewRepository(fmt.Sprintf("%s/%s", r.Host(), repo), name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.WriteLayer(ref, l, remote.WithContext(ctx), remote.WithAuth(auth)); err != nil {
		return "", fmt.Errorf("push blob to %s: %w", ref, err)
	}
	return digest.FromBytes(data), nil
}

// BasicAuth writes an htpasswd file for user:password into dir and returns
// the auth section that puts a registry behind it (Options.Auth).
func BasicAuth(dir, user, password string) (configuration.Auth, error) {
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(path, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return configuration.Auth{"htpasswd": configuration.Parameters{"realm": "shoal-test", "path": path}}, nil
}
