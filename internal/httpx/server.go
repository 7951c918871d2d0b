package httpx

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Base carries what every server exposes: a metrics registry and a
// readiness flag. Each component has its own registry so that several can
// live in one process (shoal demo, tests).
type Base struct {
	Metrics *prometheus.Registry
	ready   atomic.Bool
	// ReadyCheck, if set, is consulted by /readiness after the flag.
	ReadyCheck func(context.Context) error
}

// NewBase returns a Base with Go and process collectors registered.
func NewBase() *Base {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Base{Metrics: reg}
}

// SetReady marks the component ready (or not) for /readiness.
func (b *Base) SetReady(v bool) { b.ready.Store(v) }

// Router is a role's router: every request logged (LogRequests), and
// /health, /readiness and /metrics mounted.
func (b *Base) Router(log *slog.Logger) chi.Router {
	r := chi.NewRouter()
	r.Use(LogRequests(log))
	b.Mount(r)
	return r
}

// Mount adds /health, /readiness and /metrics to r.
func (b *Base) Mount(r chi.Router) {
	r.Get("/health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	r.Get("/readiness", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if !b.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		if b.ReadyCheck != nil {
			if err := b.ReadyCheck(r.Context()); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	r.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(b.Metrics, promhttp.HandlerOpts{}))
}

// RequireToken guards admin endpoints with a bearer token ("" = open), or
// a client certificate the server verified (mutual TLS): RequireAdmin
// without a list of identities.
func RequireToken(token string) func(http.Handler) http.Handler { return RequireAdmin(token, nil) }

// RequireAdmin guards admin and write endpoints: a request passes with the
// bearer token, or with a client certificate the server verified (a TLS
// server with mtls on) whose common name or a DNS name is in names (any
// verified certificate when names is empty). With neither a token nor
// names, the endpoint is open (as without mutual TLS before). A request
// that passes neither way gets 401 UNAUTHORIZED; the token comparison
// takes the same time whatever the guess.
func RequireAdmin(token string, names []string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if token == "" && len(names) == 0 {
			return next
		}
		want := []byte("Bearer " + token)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if CertAdmin(r, names) ||
				token != "" && subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1 {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="shoal-admin"`)
			WriteError(w, r, Errorf(http.StatusUnauthorized, CodeUnauthorized, "this endpoint needs the admin bearer token or an admin client certificate"))
		})
	}
}

// CertAdmin reports whether r came with a verified client certificate
// naming one of names (any, when names is empty).
func CertAdmin(r *http.Request, names []string) bool {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return false
	}
	if len(names) == 0 {
		return true
	}
	leaf := r.TLS.VerifiedChains[0][0]
	for _, n := range names {
		if n == leaf.Subject.CommonName || slices.Contains(leaf.DNSNames, n) {
			return true
		}
	}
	return false
}

// LogRequests logs each request at debug level, and failures at info.
func LogRequests(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(sw, r)
			lvl := slog.LevelDebug
			if sw.status >= 500 {
				lvl = slog.LevelWarn
			} else if sw.status >= 400 {
				lvl = slog.LevelInfo
			}
			log.Log(r.Context(), lvl, "http request", "method", r.Method, "path", r.URL.Path, "query", r.URL.RawQuery,
				"status", sw.status, "bytes", sw.bytes, "duration", time.Since(start), "remote", r.RemoteAddr)
		})
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// ReadFrom keeps the underlying writer's fast path (sendfile from a file).
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	w.wrote = true
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err := rf.ReadFrom(r)
		w.bytes += n
		return n, err
	}
	return io.Copy(struct{ io.Writer }{w}, r)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Server is an HTTP server bound to a listener, shut down when its context ends.
type Server struct {
	srv    *http.Server
	ln     net.Listener
	scheme string
}

// Listen binds addr ("127.0.0.1:7650", port 0 for any) for handler h,
// within lim (zero fields take the defaults).
func Listen(addr string, h http.Handler, log *slog.Logger, lim Limits) (*Server, error) {
	return ListenTLS(addr, h, log, lim, nil)
}

// ListenTLS is Listen serving TLS with tc (nil: plain HTTP).
func ListenTLS(addr string, h http.Handler, log *slog.Logger, lim Limits, tc *tls.Config) (*Server, error) {
	lim.ApplyDefaults()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	scheme := "http"
	if tc != nil {
		ln, scheme = tls.NewListener(ln, tc), "https"
	}
	return &Server{
		ln:     ln,
		scheme: scheme,
		srv: &http.Server{
			Handler:           lim.limit(h),
			ReadHeaderTimeout: lim.ReadHeaderTimeout,
			MaxHeaderBytes:    int(lim.MaxHeaderBytes),
			IdleTimeout:       lim.IdleTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
	}, nil
}

// Addr is the bound address (with the real port when 0 was asked).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is "http://" (or "https://" with TLS) + Addr.
func (s *Server) URL() string { return s.scheme + "://" + s.Addr() }

// Serve runs until ctx ends, then shuts down gracefully (bounded).
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		_ = s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close stops the server at once.
func (s *Server) Close() error { return s.srv.Close() }
