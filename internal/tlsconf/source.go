package tlsconf

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-dev/shoal/config"
)

// Source serves a [tls] table's certificates to servers and clients, and
// re-reads the files at most once per reload_interval, on the first
// handshake after it: a rotation is seen by the next connection, and an
// idle component does no work. A file that does not load (a rotation
// caught half-written, a bad bundle) keeps the certificates in use and
// logs a warning: TLS is never dropped.
type Source struct {
	cfg    Config
	prefix string
	log    *slog.Logger

	state atomic.Pointer[state]
	next  atomic.Int64 // unix nanoseconds of the next file check
	mu    sync.Mutex   // one reload at a time
	warn  string       // the last reload failure logged, under mu
}

// state is one loaded set of files.
type state struct {
	raw    [3][]byte // cert, key, ca as read
	cert   *tls.Certificate
	pool   *x509.CertPool // nil: the system roots
	server *tls.Config    // nil without cert
}

// New loads the files cfg names; prefix is the table's name in errors
// ("tls"). A file that cannot be read or parsed is an error naming its key
// and path. Nil (and no error) when cfg names no file: plain HTTP, and
// https URLs verified with the system roots.
func New(cfg Config, prefix string, log *slog.Logger) (*Source, error) {
	if cfg.Cert == "" && cfg.Key == "" && cfg.CA == "" {
		return nil, nil
	}
	cfg.ApplyDefaults()
	if err := cfg.Validate(prefix); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Source{cfg: cfg, prefix: prefix, log: log}
	raw, err := s.read()
	if err != nil {
		return nil, err
	}
	st, err := s.build(raw)
	if err != nil {
		return nil, err
	}
	s.state.Store(st)
	s.next.Store(time.Now().Add(cfg.ReloadInterval).UnixNano())
	return s, nil
}

// Config is the table the Source was built from (defaults applied).
func (s *Source) Config() Config { return s.cfg }

// read returns the contents of cert, key and ca ("" paths stay nil).
func (s *Source) read() ([3][]byte, error) {
	var raw [3][]byte
	for i, f := range []struct{ key, path string }{{"cert", s.cfg.Cert}, {"key", s.cfg.Key}, {"ca", s.cfg.CA}} {
		if f.path == "" {
			continue
		}
		b, err := os.ReadFile(f.path) // follows symlinks: Kubernetes swaps ..data
		if err != nil {
			return raw, config.Errorf(key(s.prefix, f.key), "%v", err)
		}
		raw[i] = b
	}
	return raw, nil
}

// build parses a set of files.
func (s *Source) build(raw [3][]byte) (*state, error) {
	st := &state{raw: raw}
	if raw[0] != nil {
		cert, err := tls.X509KeyPair(raw[0], raw[1])
		if err != nil {
			return nil, config.Errorf(key(s.prefix, "cert"), "%s with key %s: %v", s.cfg.Cert, s.cfg.Key, err)
		}
		if cert.Leaf == nil {
			if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
				return nil, config.Errorf(key(s.prefix, "cert"), "%s: %v", s.cfg.Cert, err)
			}
		}
		st.cert = &cert
	}
	if raw[2] != nil {
		st.pool = x509.NewCertPool()
		if !st.pool.AppendCertsFromPEM(raw[2]) {
			return nil, config.Errorf(key(s.prefix, "ca"), "%s: no PEM certificate in it", s.cfg.CA)
		}
	}
	if st.cert != nil {
		st.server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*st.cert}}
		if s.cfg.MTLS {
			st.server.ClientAuth = tls.RequireAndVerifyClientCert
			st.server.ClientCAs = st.pool
		}
	}
	return st, nil
}

// current is the loaded state, re-read first when reload_interval passed.
func (s *Source) current() *state {
	if time.Now().UnixNano() >= s.next.Load() && s.mu.TryLock() {
		s.reload()
		s.mu.Unlock()
	}
	return s.state.Load()
}

// Reload checks the files now (tests; the handshakes do it on their own).
func (s *Source) Reload() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reload()
}

func (s *Source) reload() {
	s.next.Store(time.Now().Add(s.cfg.ReloadInterval).UnixNano())
	old := s.state.Load()
	raw, err := s.read()
	if err == nil && bytes.Equal(raw[0], old.raw[0]) && bytes.Equal(raw[1], old.raw[1]) && bytes.Equal(raw[2], old.raw[2]) {
		s.warn = ""
		return
	}
	var st *state
	if err == nil {
		st, err = s.build(raw)
	}
	if err != nil {
		if err.Error() != s.warn { // once per distinct failure, not every interval
			s.log.Warn("tls: keeping the certificates in use; the files do not load", "err", err)
			s.warn = err.Error()
		}
		return
	}
	s.warn = ""
	s.state.Store(st)
	attrs := []any{"ca", s.cfg.CA}
	if st.cert != nil {
		attrs = append(attrs, "cert", s.cfg.Cert, "serial", st.cert.Leaf.SerialNumber.String(), "not_after", st.cert.Leaf.NotAfter)
	}
	s.log.Info("tls: certificates reloaded", attrs...)
}

// ServerConfig is the config of a TLS listener, nil without cert (plain
// HTTP). Each handshake gets the current certificate and client CAs.
func (s *Source) ServerConfig() *tls.Config {
	if s == nil || !s.cfg.Enabled() {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.current().server, nil
		},
	}
}

// ClientConfig is the config of one connection to serverName: the current
// CA bundle verifies the server, and the current certificate (if any) is
// presented when the server asks for one.
func (s *Source) ClientConfig(serverName string) *tls.Config {
	if s == nil {
		return &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	}
	st := s.current()
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: serverName,
		RootCAs:    st.pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if st.cert == nil {
				return &tls.Certificate{}, nil // none: the server decides
			}
			return st.cert, nil
		},
	}
}

// DialFunc dials a connection (net.Dialer.DialContext).
type DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// DialTLS returns a dialer that connects with dial and completes a TLS
// handshake with the server at addr, verified as ClientConfig says (by the
// system roots, without a certificate, for a nil Source).
func (s *Source) DialTLS(dial DialFunc) DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, s.ClientConfig(host))
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("TLS handshake with %s (verified with %s): %w", addr, s.caName(), err)
		}
		return conn, nil
	}
}

func (s *Source) caName() string {
	if s == nil || s.cfg.CA == "" {
		return "the system roots"
	}
	return key(s.prefix, "ca") + " " + s.cfg.CA
}

// Transport makes t's https connections use DialTLS (over t's DialContext),
// and returns t. With a nil Source, t is unchanged: https URLs are verified
// with the system roots.
func (s *Source) Transport(t *http.Transport) *http.Transport {
	if s == nil {
		return t
	}
	dial := t.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	t.DialTLSContext = s.DialTLS(dial)
	return t
}

// Serial is the serial number of the certificate in use ("" without one).
func (s *Source) Serial() string {
	if st := s.current(); st.cert != nil {
		return st.cert.Leaf.SerialNumber.String()
	}
	return ""
}

// Cause is ": " + err when err is a failure to verify a certificate (a CA
// that does not match, an expired certificate), else "": a server adds it
// to the message its client sees, because that is a configuration mistake
// the operator must see wherever the pull failed.
func Cause(err error) string {
	if ve := (*tls.CertificateVerificationError)(nil); errors.As(err, &ve) {
		return ": " + err.Error()
	}
	return ""
}
