package httpx

import (
	"io"
	"net/http"
	"time"

	"github.com/shoal-dev/shoal/config"
)

// Limits bound what one client may cost a server: the [http] table of every
// role's config.
type Limits struct {
	// ReadHeaderTimeout is how long a client may take to send its request
	// headers (slowloris).
	ReadHeaderTimeout time.Duration `toml:"read_header_timeout"`
	// MaxHeaderBytes caps the request line and headers; more gets 431.
	MaxHeaderBytes config.ByteSize `toml:"max_header_bytes"`
	// MaxBodyBytes caps a request body; more gets 413. Only the build-index
	// takes bodies (PUT of a tag).
	MaxBodyBytes config.ByteSize `toml:"max_body_bytes"`
	// WriteIdleTimeout is how long the server waits for a client to take the
	// next 1 MiB of a response: a client that reads slower is cut off, so it
	// cannot pin a blob and a connection for ever.
	WriteIdleTimeout time.Duration `toml:"write_idle_timeout"`
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration `toml:"idle_timeout"`
}

// Defaults of Limits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 64 << 10
	DefaultWriteIdleTimeout  = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
)

// writeChunk is the unit of WriteIdleTimeout.
const writeChunk = 1 << 20

func (l *Limits) ApplyDefaults() {
	config.SetDefault(&l.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	config.SetDefault(&l.MaxHeaderBytes, DefaultMaxHeaderBytes)
	config.SetDefault(&l.MaxBodyBytes, DefaultMaxBodyBytes)
	config.SetDefault(&l.WriteIdleTimeout, DefaultWriteIdleTimeout)
	config.SetDefault(&l.IdleTimeout, DefaultIdleTimeout)
}

// Validate checks the values; prefix is the table's key ("http").
func (l *Limits) Validate(prefix string) error {
	for key, d := range map[string]time.Duration{"read_header_timeout": l.ReadHeaderTimeout,
		"write_idle_timeout": l.WriteIdleTimeout, "idle_timeout": l.IdleTimeout} {
		if d < 100*time.Millisecond {
			return config.Errorf(prefix+"."+key, "want at least 100ms, got %s", d)
		}
	}
	if l.MaxHeaderBytes < 4<<10 || l.MaxHeaderBytes > 16<<20 {
		return config.Errorf(prefix+".max_header_bytes", "want 4KiB..16MiB, got %d bytes", l.MaxHeaderBytes)
	}
	if l.MaxBodyBytes < 1<<10 || l.MaxBodyBytes > 1<<30 {
		return config.Errorf(prefix+".max_body_bytes", "want 1KiB..1GiB, got %d bytes", l.MaxBodyBytes)
	}
	return nil
}

// limit applies the per-request limits: a body cap, and a write deadline
// pushed forward for every chunk written, so that a slow reader times out
// while a fast one never does however big the blob.
func (l Limits) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, int64(l.MaxBodyBytes))
		}
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), idle: l.WriteIdleTimeout}
		dw.extend()
		next.ServeHTTP(dw, r)
		// What the handler left buffered is flushed after it returns: give
		// that a fresh deadline too (the next request on the connection sets
		// its own).
		dw.extend()
	})
}

type deadlineWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (w *deadlineWriter) extend() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.idle)) }

func (w *deadlineWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), writeChunk)
		w.extend()
		m, err := w.ResponseWriter.Write(p[:c])
		n += m
		if err != nil {
			return n, err
		}
		p = p[c:]
	}
	return n, nil
}

// ReadFrom copies in chunks, each with its own deadline. A limited file
// (what http.ServeContent hands over) stays a one-level *io.LimitedReader
// over the file, so the kernel's sendfile path is kept.
func (w *deadlineWriter) ReadFrom(r io.Reader) (int64, error) {
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, r)
	}
	src, limit := r, int64(-1)
	if lr, ok := r.(*io.LimitedReader); ok {
		src, limit = lr.R, lr.N
		defer func() { lr.N = limit }()
	}
	var total int64
	for limit != 0 {
		c := int64(writeChunk)
		if limit > 0 {
			c = min(c, limit)
		}
		w.extend()
		n, err := rf.ReadFrom(&io.LimitedReader{R: src, N: c})
		total += n
		if limit > 0 {
			limit -= n
		}
		if err != nil {
			return total, err
		}
		if n < c {
			return total, nil // the source ended
		}
	}
	return total, nil
}

func (w *deadlineWriter) Flush() {
	w.extend()
	_ = w.rc.Flush()
}

func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
