package origin_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

const (
	authUser      = "puller"
	authPassword  = "s3cret-Pa55word-never-logged"
	wrongPassword = "wr0ng-Pa55word-never-logged"
)

// secretsIn lists the credentials (and their Basic encodings) found in s.
func secretsIn(s string) []string {
	var found []string
	for _, p := range []string{authPassword, wrongPassword} {
		for _, form := range []string{p, base64.StdEncoding.EncodeToString([]byte(authUser + ":" + p))} {
			if strings.Contains(s, form) {
				found = append(found, form)
			}
		}
	}
	return found
}

// TestUpstreamBasicAuth: a registry behind htpasswd. The right password
// fetches the blob; a wrong one gives 502 DENIED; neither password shows
// in a log line or an answer.
func TestUpstreamBasicAuth(t *testing.T) {
	auth, err := localregistry.BasicAuth(t.TempDir(), authUser, authPassword)
	if err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t, localregistry.Options{Auth: auth})
	data := localregistry.RandomBytes(1<<20+3, 10)
	d, err := reg.PushBlobAs(context.Background(), testRepo, data, &authn.Basic{Username: authUser, Password: authPassword})
	if err != nil {
		t.Fatal(err)
	}
	up := upstreamFor(t, reg.URL())
	var answers bytes.Buffer

	t.Run("right password", func(t *testing.T) {
		var logs testutil.LogBuffer
		ok := up
		ok.Username, ok.Password = authUser, authPassword
		o := startOrigin(t, "", logs.Logger(), ok)
		resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
		resp, body = do(t, http.MethodGet, metaURL(o, testRepo, d), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("metainfo: status %d %q", resp.StatusCode, body)
		}
		resp, _ = do(t, http.MethodHead, blobURL(o, testRepo, digest.FromString("other")), nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD of an unknown blob with credentials: status %d, want 404", resp.StatusCode)
		}
		if s := secretsIn(logs.String()); len(s) > 0 {
			t.Errorf("logs contain %q:\n%s", s, logs.String())
		}
	})

	for _, tc := range []struct {
		name     string
		user     string
		password string
	}{
		{"wrong password", authUser, wrongPassword},
		{"unknown user", "nobody", wrongPassword},
		{"no credentials", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs testutil.LogBuffer
			bad := up
			bad.Username, bad.Password = tc.user, tc.password
			o := startOrigin(t, "", logs.Logger(), bad)
			for _, u := range []string{blobURL(o, testRepo, d), metaURL(o, testRepo, d)} {
				resp, body := do(t, http.MethodGet, u, nil)
				answers.Write(body)
				for k, v := range resp.Header {
					fmt.Fprintf(&answers, "%s: %s\n", k, v)
				}
				wantError(t, resp, body, http.StatusBadGateway, "DENIED")
			}
			resp, _ := do(t, http.MethodHead, blobURL(o, testRepo, d), nil)
			if resp.StatusCode != http.StatusBadGateway {
				t.Errorf("HEAD: status %d, want 502", resp.StatusCode)
			}
			if o.Store().Root() == "" || len(storeFiles(t, o.Store().Root(), "blobs")) != 0 {
				t.Error("a refused fetch stored something")
			}
			if !strings.Contains(logs.String(), "unauthorized") {
				t.Errorf("the refusal is not logged:\n%s", logs.String())
			}
			if s := secretsIn(logs.String()); len(s) > 0 {
				t.Errorf("logs contain %q:\n%s", s, logs.String())
			}
		})
	}
	if s := secretsIn(answers.String()); len(s) > 0 {
		t.Errorf("answers contain %q", s)
	}
}

// TestUpstreamBearerToken: a registry with distribution's token auth. The
// origin gets one token for the repository and reuses it for every blob;
// bad credentials give 502 DENIED without leaking them.
func TestUpstreamBearerToken(t *testing.T) {
	const pusher, pushPass = "pusher", "push-pass"
	ts := testutil.StartTokenServer(t, "shoal-test-issuer", "shoal-test-registry", map[string]string{
		authUser: authPassword, pusher: pushPass,
	})
	reg := startRegistry(t, localregistry.Options{Auth: configuration.Auth{
		"token": configuration.Parameters{
			"realm":          ts.Realm(),
			"service":        "shoal-test-registry",
			"issuer":         "shoal-test-issuer",
			"rootcertbundle": ts.RootBundle(t),
		},
	}})
	blobs := map[digest.Digest][]byte{}
	for i := range 3 {
		data := localregistry.RandomBytes(int64(256<<10+i), uint64(20+i))
		d, err := reg.PushBlobAs(context.Background(), testRepo, data, &authn.Basic{Username: pusher, Password: pushPass})
		if err != nil {
			t.Fatal(err)
		}
		blobs[d] = data
	}
	up := upstreamFor(t, reg.URL())
	up.Username, up.Password = authUser, authPassword

	fetchAll := func(t *testing.T, parallel bool) {
		ts.Reset()
		reg.ResetCounts()
		var logs testutil.LogBuffer
		o := startOrigin(t, "", logs.Logger(), up)
		var wg sync.WaitGroup
		var failed atomic.Int32
		for d, data := range blobs {
			get := func() {
				resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
				if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
					failed.Add(1)
					t.Errorf("blob %s: status %d, %d bytes %q", d, resp.StatusCode, len(body), body[:min(len(body), 200)])
				}
			}
			if parallel {
				wg.Go(get)
			} else {
				get()
			}
		}
		wg.Wait()
		if failed.Load() > 0 {
			return
		}
		for d := range blobs {
			if n := reg.BlobGets(d.String()); n != 1 {
				t.Errorf("registry saw %d GETs of %s, want 1", n, d)
			}
		}
		if n, refused := ts.Counts(); n != 1 || refused != 0 {
			t.Errorf("token server got %d requests (%d refused), want exactly 1", n, refused)
		}
		if s := secretsIn(logs.String()); len(s) > 0 {
			t.Errorf("logs contain %q", s)
		}
	}
	t.Run("sequential", func(t *testing.T) { fetchAll(t, false) })
	t.Run("parallel", func(t *testing.T) { fetchAll(t, true) })

	t.Run("wrong password", func(t *testing.T) {
		ts.Reset()
		var logs testutil.LogBuffer
		bad := up
		bad.Password = wrongPassword
		o := startOrigin(t, "", logs.Logger(), bad)
		var answers bytes.Buffer
		for d := range blobs {
			resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
			answers.Write(body)
			wantError(t, resp, body, http.StatusBadGateway, "DENIED")
		}
		if _, refused := ts.Counts(); refused == 0 {
			t.Error("the token server never refused the wrong password")
		}
		if s := secretsIn(logs.String() + answers.String()); len(s) > 0 {
			t.Errorf("logs or answers contain %q", s)
		}
	})
}

// TestUpstreamDockerConfig: credentials come from a Docker config.json, as
// `docker login` leaves them; another host's entry is never used, and a file
// without an entry for the host is refused at config time, naming the key.
func TestUpstreamDockerConfig(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte(authPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(authUser+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t, localregistry.Options{Auth: configuration.Auth{
		"htpasswd": configuration.Parameters{"realm": "shoal-test", "path": htpasswd},
	}})
	data := localregistry.RandomBytes(300<<10, 12)
	d, err := reg.PushBlobAs(context.Background(), testRepo, data, &authn.Basic{Username: authUser, Password: authPassword})
	if err != nil {
		t.Fatal(err)
	}
	up := upstreamFor(t, reg.URL())
	enc := func(u, p string) string { return base64.StdEncoding.EncodeToString([]byte(u + ":" + p)) }
	writeConfig := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// The right entry for this host, a wrong one for another host.
	good := writeConfig("good.json", fmt.Sprintf(`{"auths":{%q:{"auth":%q},"other.example:5000":{"auth":%q}}}`,
		up.Host, enc(authUser, authPassword), enc(authUser, wrongPassword)))
	var logs testutil.LogBuffer
	withCfg := up
	withCfg.DockerConfig = good
	if err := withCfg.Validate("upstream[0]"); err != nil {
		t.Fatal(err)
	}
	o := startOrigin(t, "", logs.Logger(), withCfg)
	resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("with docker_config: status %d, %d bytes", resp.StatusCode, len(body))
	}
	if s := secretsIn(logs.String()); len(s) > 0 {
		t.Errorf("logs contain %q", s)
	}

	// No entry for this host: refused when the config is checked.
	none := writeConfig("none.json", fmt.Sprintf(`{"auths":{"other.example:5000":{"auth":%q}}}`, enc(authUser, authPassword)))
	bad := up
	bad.DockerConfig = none
	err = bad.Validate("upstream[0]")
	if err == nil || !strings.Contains(err.Error(), `"upstream[0].docker_config"`) || !strings.Contains(err.Error(), up.Host) {
		t.Fatalf("Validate with no entry for the host: %v", err)
	}
	bad.DockerConfig = filepath.Join(dir, "missing.json")
	if err := bad.Validate("upstream[0]"); err == nil {
		t.Fatal("Validate with a missing docker_config file succeeded")
	}
	bad.DockerConfig, bad.Username, bad.Password = good, "u", "p"
	if err := bad.Validate("upstream[0]"); err == nil {
		t.Fatal("docker_config together with username/password accepted")
	}
}

// TestCredentialsStayWithTheirHost: registries often answer a blob GET with
// a redirect to object storage on another host. The origin follows it, but
// the registry's credentials must not go along. (A real distribution
// registry on a filesystem does not redirect, so a small stand-in does.)
func TestCredentialsStayWithTheirHost(t *testing.T) {
	data := localregistry.RandomBytes(200<<10, 13)
	d := digest.FromBytes(data)
	var storageAuth atomic.Value
	storageAuth.Store("")
	storage := listenOn(t, "127.0.0.3:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		storageAuth.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Length", fmt.Sprint(len(data)))
		_, _ = w.Write(data)
	}))
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(authUser+":"+authPassword))
	reg := listenOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != want {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
			http.Redirect(w, r, storage+"/bucket/"+d.Encoded(), http.StatusTemporaryRedirect)
			return
		}
		w.WriteHeader(http.StatusOK) // GET /v2/
	}))
	up := upstreamFor(t, reg)
	up.Username, up.Password = authUser, authPassword
	o := startOrigin(t, "", testutil.Logger(t), up)
	resp, body := do(t, http.MethodGet, blobURL(o, testRepo, d), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := storageAuth.Load().(string); got != "" {
		t.Fatalf("the redirect target received Authorization %q", got)
	}
}

func listenOn(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}
