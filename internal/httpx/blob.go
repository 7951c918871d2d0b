package httpx

import (
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// SetBlobHeaders sets what every blob answer carries: its type, digest and
// an ETag that lets clients revalidate by digest.
func SetBlobHeaders(w http.ResponseWriter, d digest.Digest) {
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Etag", `"`+d.String()+`"`)
}

// CountingWriter counts the body bytes written through it.
type CountingWriter struct {
	http.ResponseWriter
	N int64
}

// Sender is a source that copies itself into a writer's ReadFrom in file
// sections (store.Reader, following a download).
type Sender interface {
	SendTo(w io.ReaderFrom, n int64) (int64, error)
}

// ReadFrom keeps the underlying writer's fast path (sendfile from a file),
// also for a Sender under the io.LimitedReader that http.ServeContent makes.
func (c *CountingWriter) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.ResponseWriter.(io.ReaderFrom); ok {
		if lr, ok := r.(*io.LimitedReader); ok {
			if s, ok := lr.R.(Sender); ok {
				n, err := s.SendTo(rf, lr.N)
				lr.N -= n
				c.N += n
				return n, err
			}
		}
		n, err := rf.ReadFrom(r)
		c.N += n
		return n, err
	}
	n, err := io.Copy(struct{ io.Writer }{c}, r)
	return n, err
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.N += int64(n)
	return n, err
}
