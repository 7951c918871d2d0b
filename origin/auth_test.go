package origin_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoal-dev/shoal/internal/localregistry"
	"github.com/shoal-dev/shoal/internal/testutil"
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
	hash, err := bcrypt.GenerateFromPassword([]byte(authPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(authUser+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := startRegistry(t, localregistry.Options{Auth: configuration.Auth{
		"htpasswd": configuration.Parameters{"realm": "shoal-test", "path": htpasswd},
	}})
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

// tokenServer is a minimal Docker token service (the "token" auth of
// distribution): it checks Basic credentials and signs an ES256 JWT whose
// x5c header carries the certificate the registry trusts.
type tokenServer struct {
	*httptest.Server
	key      *ecdsa.PrivateKey
	certDER  []byte
	issuer   string
	service  string
	users    map[string]string
	mu       sync.Mutex
	requests int
	refused  int
}

func startTokenServer(t *testing.T, issuer, service string, users map[string]string) *tokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: issuer},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tokenServer{key: key, certDER: der, issuer: issuer, service: service, users: users}
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

// bundle writes the certificate as a PEM root bundle and returns its path.
func (ts *tokenServer) bundle(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token-root.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.certDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func (ts *tokenServer) counts() (requests, refused int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.requests, ts.refused
}

func (ts *tokenServer) reset() {
	ts.mu.Lock()
	ts.requests, ts.refused = 0, 0
	ts.mu.Unlock()
}

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ts *tokenServer) serve(w http.ResponseWriter, r *http.Request) {
	ts.mu.Lock()
	ts.requests++
	ts.mu.Unlock()
	user, pass, ok := r.BasicAuth()
	if want, known := ts.users[user]; !ok || !known || want != pass || r.URL.Query().Get("service") != ts.service {
		ts.mu.Lock()
		ts.refused++
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`))
		return
	}
	// scope=repository:<name>:<actions>; grant what is asked.
	access := []resourceActions{}
	for _, scope := range r.URL.Query()["scope"] {
		parts := strings.Split(scope, ":")
		if len(parts) < 3 {
			continue
		}
		access = append(access, resourceActions{
			Type:    parts[0],
			Name:    strings.Join(parts[1:len(parts)-1], ":"),
			Actions: strings.Split(parts[len(parts)-1], ","),
		})
	}
	now := time.Now()
	tok, err := ts.sign(map[string]any{
		"iss": ts.issuer, "sub": user, "aud": ts.service,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": fmt.Sprint(now.UnixNano()), "access": access,
	})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token": tok, "access_token": tok, "expires_in": 300, "issued_at": now.UTC().Format(time.RFC3339),
	})
}

// sign makes a compact JWS (ES256: SHA-256, then r||s as 32 bytes each).
func (ts *tokenServer) sign(claims map[string]any) (string, error) {
	hdr, err := json.Marshal(map[string]any{
		"alg": "ES256", "typ": "JWT", "x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)},
	})
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(hdr) + "." + enc.EncodeToString(body)
	sum := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + enc.EncodeToString(sig), nil
}

// TestUpstreamBearerToken: a registry with distribution's token auth. The
// origin gets one token for the repository and reuses it for every blob;
// bad credentials give 502 DENIED without leaking them.
func TestUpstreamBearerToken(t *testing.T) {
	const pusher, pushPass = "pusher", "push-pass"
	ts := startTokenServer(t, "shoal-test-issuer", "shoal-test-registry", map[string]string{
		authUser: authPassword, pusher: pushPass,
	})
	reg := startRegistry(t, localregistry.Options{Auth: configuration.Auth{
		"token": configuration.Parameters{
			// go-containerregistry refuses a realm that is a private or
			// loopback IP literal on another host:port than the registry's
			// (SSRF guard); a host name passes.
			"realm":          strings.Replace(ts.URL, "127.0.0.1", "localhost", 1) + "/token",
			"service":        "shoal-test-registry",
			"issuer":         "shoal-test-issuer",
			"rootcertbundle": ts.bundle(t),
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
		ts.reset()
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
		if n, refused := ts.counts(); n != 1 || refused != 0 {
			t.Errorf("token server got %d requests (%d refused), want exactly 1", n, refused)
		}
		if s := secretsIn(logs.String()); len(s) > 0 {
			t.Errorf("logs contain %q", s)
		}
	}
	t.Run("sequential", func(t *testing.T) { fetchAll(t, false) })
	t.Run("parallel", func(t *testing.T) { fetchAll(t, true) })

	t.Run("wrong password", func(t *testing.T) {
		ts.reset()
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
		if _, refused := ts.counts(); refused == 0 {
			t.Error("the token server never refused the wrong password")
		}
		if s := secretsIn(logs.String() + answers.String()); len(s) > 0 {
			t.Errorf("logs or answers contain %q", s)
		}
	})
}
