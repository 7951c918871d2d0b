package tlsconf_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/tlsconf"
)

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  tlsconf.Config
		key  string // "" = valid
	}{
		{"empty", tlsconf.Config{}, ""},
		{"ca only", tlsconf.Config{CA: "/ca.crt"}, ""},
		{"cert and key", tlsconf.Config{Cert: "/c", Key: "/k"}, ""},
		{"mtls", tlsconf.Config{Cert: "/c", Key: "/k", CA: "/ca", MTLS: true, AdminNames: []string{"ops"}}, ""},
		{"cert without key", tlsconf.Config{Cert: "/c"}, "tls.key"},
		{"key without cert", tlsconf.Config{Key: "/k"}, "tls.cert"},
		{"mtls without ca", tlsconf.Config{Cert: "/c", Key: "/k", MTLS: true}, "tls.ca"},
		{"mtls without cert", tlsconf.Config{CA: "/ca", MTLS: true}, "tls.mtls"},
		{"admin names without mtls", tlsconf.Config{Cert: "/c", Key: "/k", AdminNames: []string{"ops"}}, "tls.admin_names"},
		{"reload too often", tlsconf.Config{Cert: "/c", Key: "/k", ReloadInterval: time.Millisecond}, "tls.reload_interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			c.ApplyDefaults()
			err := c.Validate("tls")
			if tc.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), `"`+tc.key+`"`) {
				t.Fatalf("want an error naming %s, got %v", tc.key, err)
			}
		})
	}
}

func TestNewBadFiles(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	leaf := ca.Issue("127.0.0.1")
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := ca.Issue("other")
	for _, tc := range []struct {
		name      string
		cfg       tlsconf.Config
		key, file string
	}{
		{"missing cert", tlsconf.Config{Cert: filepath.Join(dir, "nope.crt"), Key: leaf.KeyFile}, "tls.cert", "nope.crt"},
		{"missing key", tlsconf.Config{Cert: leaf.CertFile, Key: filepath.Join(dir, "nope.key")}, "tls.key", "nope.key"},
		{"missing ca", tlsconf.Config{CA: filepath.Join(dir, "nope-ca.crt")}, "tls.ca", "nope-ca.crt"},
		{"garbage cert", tlsconf.Config{Cert: garbage, Key: leaf.KeyFile}, "tls.cert", garbage},
		{"key of another cert", tlsconf.Config{Cert: leaf.CertFile, Key: other.KeyFile}, "tls.cert", other.KeyFile},
		{"garbage ca", tlsconf.Config{CA: garbage}, "tls.ca", garbage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tlsconf.New(tc.cfg, "tls", nil)
			if err == nil || !strings.Contains(err.Error(), `"`+tc.key+`"`) || !strings.Contains(err.Error(), tc.file) {
				t.Fatalf("want an error naming %s and %s, got %v", tc.key, tc.file, err)
			}
		})
	}
	if s, err := tlsconf.New(tlsconf.Config{}, "tls", nil); s != nil || err != nil {
		t.Fatalf("empty table: want nil, nil, got %v, %v", s, err)
	}
}

// serve runs an HTTPS server with src on 127.0.0.1 answering "ok", and the
// admin-guarded /admin path.
func serve(t *testing.T, src *tlsconf.Source, token string, names []string) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.Handle("/admin", httpx.RequireAdmin(token, names)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "admin")
	})))
	srv, err := httpx.ListenTLS("127.0.0.1:0", mux, testutil.Logger(t), httpx.Limits{}, src.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if !strings.HasPrefix(srv.URL(), "https://") {
		t.Fatalf("URL %s: want https", srv.URL())
	}
	return srv.URL()
}

func client(src *tlsconf.Source) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: src.Transport(&http.Transport{DisableKeepAlives: true})}
}

func get(c *http.Client, u string, h ...string) (int, error) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func mustNew(t *testing.T, c tlsconf.Config) *tlsconf.Source {
	t.Helper()
	s, err := tlsconf.New(c, "tls", testutil.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestMutualTLS(t *testing.T) {
	ca, evil := testutil.NewCA(t, "cluster"), testutil.NewCA(t, "evil")
	srvLeaf, cliLeaf, evilLeaf := ca.Issue("127.0.0.1", "localhost"), ca.Issue("agent-1"), evil.Issue("127.0.0.1")
	srv := mustNew(t, tlsconf.Config{Cert: srvLeaf.CertFile, Key: srvLeaf.KeyFile, CA: ca.CAFile, MTLS: true})
	u := serve(t, srv, "secret", []string{"ops"})

	good := client(mustNew(t, tlsconf.Config{Cert: cliLeaf.CertFile, Key: cliLeaf.KeyFile, CA: ca.CAFile}))
	if code, err := get(good, u+"/"); err != nil || code != 200 {
		t.Fatalf("client with the cluster's cert: %d %v", code, err)
	}
	// Not an admin identity: the token still opens the admin endpoint.
	if code, err := get(good, u+"/admin"); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("admin without token, not in admin_names: want 401, got %d %v", code, err)
	}
	if code, err := get(good, u+"/admin", "Authorization", "Bearer secret"); err != nil || code != 200 {
		t.Fatalf("admin with token: %d %v", code, err)
	}

	noCert := client(mustNew(t, tlsconf.Config{CA: ca.CAFile}))
	if _, err := get(noCert, u+"/"); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	evilClient := client(mustNew(t, tlsconf.Config{Cert: evilLeaf.CertFile, Key: evilLeaf.KeyFile, CA: ca.CAFile}))
	if _, err := get(evilClient, u+"/"); err == nil {
		t.Fatal("a client with a certificate from another CA was served")
	}
	// A server whose certificate the client's CA did not sign.
	evilSrv := serve(t, mustNew(t, tlsconf.Config{Cert: evilLeaf.CertFile, Key: evilLeaf.KeyFile}), "", nil)
	_, err := get(good, evilSrv+"/")
	if err == nil || !strings.Contains(err.Error(), "unknown authority") || !strings.Contains(err.Error(), ca.CAFile) {
		t.Fatalf("server from another CA: want a verification error naming the CA file, got %v", err)
	}
}

func TestAdminNames(t *testing.T) {
	ca := testutil.NewCA(t, "cluster")
	srvLeaf := ca.Issue("127.0.0.1")
	srv := mustNew(t, tlsconf.Config{Cert: srvLeaf.CertFile, Key: srvLeaf.KeyFile, CA: ca.CAFile, MTLS: true})
	for _, tc := range []struct {
		names  []string
		leaf   []string
		status int
	}{
		{nil, []string{"anyone"}, 200},                   // any verified certificate
		{[]string{"ops"}, []string{"ops"}, 200},          // by common name
		{[]string{"ops"}, []string{"agent", "ops"}, 200}, // by DNS name
		{[]string{"ops"}, []string{"agent"}, http.StatusUnauthorized},
	} {
		u := serve(t, srv, "", tc.names)
		l := ca.Issue(tc.leaf...)
		c := client(mustNew(t, tlsconf.Config{Cert: l.CertFile, Key: l.KeyFile, CA: ca.CAFile}))
		if code, err := get(c, u+"/admin"); err != nil || code != tc.status {
			t.Errorf("admin_names %v, cert %v: want %d, got %d %v", tc.names, tc.leaf, tc.status, code, err)
		}
	}
}

func TestRotation(t *testing.T) {
	ca, ca2 := testutil.NewCA(t, "old"), testutil.NewCA(t, "new")
	dir := t.TempDir()
	certF, keyF, caF := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	install := func(l *testutil.Leaf, cas ...*testutil.CA) {
		var bundle []byte
		for _, c := range cas {
			bundle = append(bundle, c.PEM()...)
		}
		testutil.WriteFileAtomic(t, caF, bundle)
		testutil.WriteFileAtomic(t, keyF, l.KeyPEM)
		testutil.WriteFileAtomic(t, certF, l.CertPEM)
	}
	first := ca.Issue("127.0.0.1")
	install(first, ca)
	cfg := tlsconf.Config{Cert: certF, Key: keyF, CA: caF, MTLS: true, ReloadInterval: 100 * time.Millisecond}
	srv := mustNew(t, cfg)
	cli := mustNew(t, cfg) // the same files, as two components of one pod would
	u := serve(t, srv, "", nil)
	c := client(cli)
	if code, err := get(c, u+"/"); err != nil || code != 200 {
		t.Fatalf("before rotation: %d %v", code, err)
	}
	// A bad file mid-rotation keeps the certificates in use.
	testutil.WriteFileAtomic(t, certF, []byte("half-written"))
	srv.Reload()
	if code, err := get(c, u+"/"); err != nil || code != 200 {
		t.Fatalf("with a bad cert file: the old certificates must stay in use: %d %v", code, err)
	}
	if srv.Serial() != first.Cert.SerialNumber.String() {
		t.Fatalf("serial %s after a bad file, want the first one %s", srv.Serial(), first.Cert.SerialNumber)
	}

	// The new CA joins the bundle, then a certificate it issued replaces
	// the old one: both sides pick it up without a restart.
	second := ca2.Issue("127.0.0.1")
	install(second, ca, ca2)
	want := second.Cert.SerialNumber.String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, err := get(c, u+"/")
		if err == nil && code == 200 && srv.Serial() == want && cli.Serial() == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server serial %s, client serial %s, want %s (last: %d %v)", srv.Serial(), cli.Serial(), want, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := peerSerial(t, c, u); got != want {
		t.Fatalf("the server presents serial %s, want %s", got, want)
	}
}

// peerSerial is the serial of the server certificate a request through c sees.
func peerSerial(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber.String()
}
