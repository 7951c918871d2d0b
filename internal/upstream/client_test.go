package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

func startRegistry(t *testing.T, opts localregistry.Options) *localregistry.Registry {
	t.Helper()
	reg, err := localregistry.StartWithOptions(t.TempDir(), "127.0.0.1:0", opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry: %v", err)
		}
	})
	return reg
}

func readBlob(ctx context.Context, c *Client, r Repo, d digest.Digest) ([]byte, error) {
	body, size, err := c.GetBlob(ctx, r, d)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err == nil && int64(len(b)) != size {
		err = io.ErrUnexpectedEOF
	}
	return b, err
}

// TestConcurrentRequestsShareOneToken: requests for a repository that has
// no transport yet share one handshake, so the token service is asked once.
func TestConcurrentRequestsShareOneToken(t *testing.T) {
	ts := testutil.StartTokenServer(t, "issuer", "registry", map[string]string{"u": "p"})
	reg := startRegistry(t, localregistry.Options{Auth: configuration.Auth{"token": configuration.Parameters{
		"realm": ts.Realm(), "service": "registry", "issuer": "issuer", "rootcertbundle": ts.RootBundle(t),
	}}})
	data := localregistry.RandomBytes(64<<10, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := reg.PushBlobAs(ctx, "team/app", data, &authn.Basic{Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ts.Reset()
	c := newClient(t, reg.Host(), Config{Host: reg.Host(), URL: reg.URL(), Username: "u", Password: "p"})
	r, err := c.Resolve("team/app")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			b, err := readBlob(ctx, c, r, d)
			if err != nil || !bytes.Equal(b, data) {
				t.Errorf("GetBlob: %d bytes, %v", len(b), err)
			}
		})
	}
	wg.Wait()
	if n, _ := ts.Counts(); n != 1 {
		t.Fatalf("token service asked %d times, want 1", n)
	}
	// A caller that gives up does not end the handshake for the others.
	c2 := newClient(t, reg.Host(), Config{Host: reg.Host(), URL: reg.URL(), Username: "u", Password: "p"})
	r2, _ := c2.Resolve("team/app")
	gone, leave := context.WithCancel(ctx)
	leave()
	if _, _, err := c2.GetBlob(gone, r2, d); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetBlob with a cancelled context: %v", err)
	}
	if b, err := readBlob(ctx, c2, r2, d); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("GetBlob after another caller left: %d bytes, %v", len(b), err)
	}
}

// TestGetBlobErrors: the sentinel errors callers branch on.
func TestGetBlobErrors(t *testing.T) {
	ts := testutil.StartTokenServer(t, "issuer", "registry", map[string]string{"u": "p"})
	reg := startRegistry(t, localregistry.Options{Auth: configuration.Auth{"token": configuration.Parameters{
		"realm": ts.Realm(), "service": "registry", "issuer": "issuer", "rootcertbundle": ts.RootBundle(t),
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	unknown := digest.FromString("unknown")

	good := newClient(t, reg.Host(), Config{Host: reg.Host(), URL: reg.URL(), Username: "u", Password: "p"})
	r, _ := good.Resolve("team/app")
	if _, _, err := good.GetBlob(ctx, r, unknown); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown blob: %v, want ErrNotFound", err)
	}
	if _, err := good.HeadBlob(ctx, r, unknown); !errors.Is(err, ErrNotFound) {
		t.Errorf("HEAD unknown blob: %v, want ErrNotFound", err)
	}

	bad := newClient(t, reg.Host(), Config{Host: reg.Host(), URL: reg.URL(), Username: "u", Password: "wrong"})
	r, _ = bad.Resolve("team/app")
	if _, _, err := bad.GetBlob(ctx, r, unknown); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong password: %v, want ErrUnauthorized", err)
	}
	if bad.transports.Len() != 0 {
		t.Error("a refused handshake was cached")
	}

	reg.SetDown(true)
	down := newClient(t, reg.Host(), Config{Host: reg.Host(), URL: reg.URL()})
	r, _ = down.Resolve("team/app")
	start := time.Now()
	_, _, err := down.GetBlob(ctx, r, unknown)
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnauthorized) {
		t.Errorf("registry down: %v", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("registry down: took %s", time.Since(start))
	}
}
