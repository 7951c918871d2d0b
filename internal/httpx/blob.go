package httpx

import (
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto"
)

// SetBlobHeaders sets what every blob answer carries: its type, digest and
// an ETag that lets clients revalidate by digest.
func SetBlobHeaders(w http.ResponseWriter, d digest.Digest) {
	h := w.Header()
	h.Set("Content-Type", proto.ContentTypeOctetStream)
	h.Set(proto.HeaderContentDigest, d.String())
	h.Set("Etag", `"`+d.String()+`"`)
}

// ServeBlob answers a GET or HEAD of blob d, size bytes read from content:
// an unsatisfiable Range gets OCI error JSON (http.ServeContent would answer
// text/plain), anything else goes to http.ServeContent (Range, HEAD,
// conditionals), whose copy keeps the sendfile path for a file or a Sender.
// It returns the body bytes sent. If content fails mid-way the body ends
// short of Content-Length and the connection is cut.
func ServeBlob(w http.ResponseWriter, r *http.Request, d digest.Digest, size int64, content io.ReadSeeker) int64 {
	if _, err := ParseRange(r.Header.Get("Range"), size); err != nil {
		w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		WriteError(w, r, Errorf(http.StatusRequestedRangeNotSatisfiable, CodeRangeInvalid,
			"range %q not satisfiable for %d bytes", r.Header.Get("Range"), size))
		return 0
	}
	SetBlobHeaders(w, d)
	cw := &CountingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, content)
	return cw.N
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
