package testutil

import (
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
	"testing"
	"time"
)

// TokenServer is a minimal Docker token service (the "token" auth of
// distribution): it checks Basic credentials and signs an ES256 JWT whose
// x5c header carries the certificate the registry trusts.
type TokenServer struct {
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

// StartTokenServer serves tokens for users (name -> password) until the
// test ends. The registry must be configured with issuer, service and the
// RootBundle, and its realm must name "localhost", not 127.0.0.1 (see
// Realm).
func StartTokenServer(t testing.TB, issuer, service string, users map[string]string) *TokenServer {
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
	ts := &TokenServer{key: key, certDER: der, issuer: issuer, service: service, users: users}
	ts.Server = httptest.NewServer(http.HandlerFunc(ts.serve))
	t.Cleanup(ts.Close)
	return ts
}

// RootBundle writes the certificate as a PEM root bundle and returns its path.
func (ts *TokenServer) RootBundle(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token-root.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.certDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Counts returns the token requests served and refused since the last Reset.
func (ts *TokenServer) Counts() (requests, refused int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.requests, ts.refused
}

// Reset zeroes the counters.
func (ts *TokenServer) Reset() {
	ts.mu.Lock()
	ts.requests, ts.refused = 0, 0
	ts.mu.Unlock()
}

type resourceActions struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
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
func (ts *TokenServer) sign(claims map[string]any) (string, error) {
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

// Realm is the token endpoint as a registry's auth.token.realm. It names
// localhost: go-containerregistry refuses a realm that is a loopback or
// private IP literal on another host:port than the registry's (SSRF guard).
func (ts *TokenServer) Realm() string {
	return strings.Replace(ts.URL, "127.0.0.1", "localhost", 1) + "/token"
}
