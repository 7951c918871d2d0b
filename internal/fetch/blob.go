package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/proto"
)

// ErrDigestMismatch is a blob whose bytes do not hash to its digest.
var ErrDigestMismatch = errors.New("digest mismatch")

// BlobProgress hears about one blob's download.
type BlobProgress interface {
	// Start says how many bytes were already on disk (present or partial).
	Start(have int64)
	// Add counts bytes received.
	Add(n int)
	// Restart says the bytes counted so far are dropped (a bad partial).
	Restart()
	// Done ends the blob: state is "present" (already complete),
	// "resumed", "downloaded", or err is set.
	Done(state string, err error)
}

// Progress makes a BlobProgress per blob.
type Progress interface {
	Blob(d digest.Digest, size int64) BlobProgress
}

type noProgress struct{}

func (noProgress) Blob(digest.Digest, int64) BlobProgress { return noProgress{} }
func (noProgress) Start(int64)                            {}
func (noProgress) Add(int)                                {}
func (noProgress) Restart()                               {}
func (noProgress) Done(string, error)                     {}

// copyBuf is the size of a blob copy's buffer: memory per download.
const copyBuf = 1 << 20

// Blob states, as Blob and BlobProgress.Done report them.
const (
	StatePresent    = "present"    // complete and verified already
	StateResumed    = "resumed"    // continued from a partial file
	StateDownloaded = "downloaded" // fetched whole
)

// Blob downloads blob d (size bytes, -1 when unknown) of ref's repository
// to path: a complete file already there is verified and kept; a
// path+".partial" file is continued with Range from its size (its bytes
// re-hashed); the file appears at path only once it matched d.
func (c *Client) Blob(ctx context.Context, ref Ref, d digest.Digest, size int64, path string, p BlobProgress) (state string, err error) {
	if p == nil {
		p = noProgress{}
	}
	defer func() { p.Done(state, err) }()
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("blob %s: %w", d, err)
	}
	if ok, err := verifyFile(path, d, size); err != nil {
		return "", err
	} else if ok {
		p.Start(size)
		return StatePresent, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	part := path + ".partial"
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	resumed, err := c.download(ctx, ref, d, size, f, p, false)
	if errors.Is(err, ErrDigestMismatch) && resumed {
		// The bytes on disk were wrong, not the agent's: start over once.
		p.Restart()
		resumed = false
		_, err = c.download(ctx, ref, d, size, f, p, true)
	}
	if err != nil {
		if errors.Is(err, ErrDigestMismatch) {
			_ = os.Remove(part) // never resume from bytes known to be wrong
		}
		return "", fmt.Errorf("blob %s: %w", d, err)
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(part, path); err != nil {
		return "", err
	}
	if resumed {
		return StateResumed, nil
	}
	return StateDownloaded, nil
}

// download fills f (the partial file) with blob d, continuing from f's
// size unless fresh; resumed says whether bytes already there were used.
func (c *Client) download(ctx context.Context, ref Ref, d digest.Digest, size int64, f *os.File, p BlobProgress, fresh bool) (resumed bool, err error) {
	h := d.Algorithm().Hash()
	have := int64(0)
	if !fresh {
		if fi, err := f.Stat(); err == nil {
			have = fi.Size()
		}
		if size >= 0 && have > size {
			have = 0 // longer than the blob: not a prefix of it
		}
	}
	if have > 0 {
		// Re-hash what is there: the digest covers every byte.
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return false, err
		}
		if _, err := io.CopyBuffer(h, io.LimitReader(f, have), make([]byte, copyBuf)); err != nil {
			return false, err
		}
	}
	if err := f.Truncate(have); err != nil {
		return false, err
	}
	if _, err := f.Seek(have, io.SeekStart); err != nil {
		return false, err
	}
	p.Start(have)
	if size < 0 || have < size {
		hdr := http.Header{}
		if have > 0 {
			hdr.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
		}
		resp, err := c.get(ctx, ref.Registry, proto.V2BlobURL(c.Base, ref.Repo, d), hdr)
		if err != nil {
			return have > 0, err
		}
		defer drain(resp.Body)
		if resp.StatusCode == http.StatusPartialContent && !strings.HasPrefix(resp.Header.Get("Content-Range"), "bytes "+strconv.FormatInt(have, 10)+"-") {
			return true, fmt.Errorf("asked for bytes %d-, got Content-Range %q", have, resp.Header.Get("Content-Range"))
		}
		if have > 0 && resp.StatusCode != http.StatusPartialContent {
			// The range was ignored: the body is the whole blob.
			h.Reset()
			have = 0
			p.Restart()
			if err := f.Truncate(0); err != nil {
				return false, err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return false, err
			}
		}
		w := io.MultiWriter(f, h, progressWriter{p})
		n, err := io.CopyBuffer(w, resp.Body, make([]byte, copyBuf))
		if err != nil {
			return have > 0, fmt.Errorf("after %d bytes: %w", have+n, err)
		}
		if size >= 0 && have+n != size {
			return have > 0, fmt.Errorf("got %d bytes, want %d", have+n, size)
		}
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return have > 0, fmt.Errorf("%w: got %s", ErrDigestMismatch, got)
	}
	return have > 0, nil
}

type progressWriter struct{ p BlobProgress }

func (w progressWriter) Write(b []byte) (int, error) { w.p.Add(len(b)); return len(b), nil }

// verifyFile says whether path holds blob d (of size, -1 unknown); a file
// that does not is removed.
func verifyFile(path string, d digest.Digest, size int64) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	v := d.Verifier()
	n, err := io.CopyBuffer(v, f, make([]byte, copyBuf))
	if err != nil {
		return false, err
	}
	if v.Verified() && (size < 0 || n == size) {
		return true, nil
	}
	return false, os.Remove(path)
}
