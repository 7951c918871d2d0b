package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Reader reads a Download as it grows: a read past the visible bytes blocks
// until they arrive, the download fails, or ctx ends. It implements
// io.ReadSeeker (for http.ServeContent) and io.ReaderAt.
type Reader struct {
	dl     *Download
	ctx    context.Context
	off    int64
	closed bool
	f      *os.File // SendTo's own descriptor (its offset is the reader's)
}

// NewReader returns a reader that holds a reference to dl until Close.
func (dl *Download) NewReader(ctx context.Context) *Reader {
	dl.acquire()
	return &Reader{dl: dl, ctx: ctx}
}

// Size of the whole blob.
func (r *Reader) Size() int64 { return r.dl.size }

func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.dl.size {
		return 0, io.EOF
	}
	total := 0
	for len(p) > 0 && off < r.dl.size {
		vis, err := r.dl.waitVisible(r.ctx, off)
		if err != nil {
			return total, err
		}
		n := min(int64(len(p)), vis-off)
		m, err := r.dl.f.ReadAt(p[:n], off)
		total += m
		if err != nil && !errors.Is(err, io.EOF) {
			return total, fmt.Errorf("read %s: %w", r.dl.d, err)
		}
		p, off = p[m:], off+int64(m)
	}
	if len(p) > 0 {
		return total, io.EOF
	}
	return total, nil
}

// Read returns what is visible at the current offset (at least one byte),
// waiting if nothing is.
func (r *Reader) Read(p []byte) (int, error) {
	if r.off >= r.dl.size {
		return 0, io.EOF
	}
	vis, err := r.dl.waitVisible(r.ctx, r.off)
	if err != nil {
		return 0, err
	}
	n := min(int64(len(p)), vis-r.off)
	m, err := r.dl.f.ReadAt(p[:n], r.off)
	r.off += int64(m)
	if err != nil && !errors.Is(err, io.EOF) {
		return m, fmt.Errorf("read %s: %w", r.dl.d, err)
	}
	return m, nil
}

func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.dl.size + offset
	default:
		return 0, errors.New("seek: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("seek: negative position")
	}
	r.off = abs
	return abs, nil
}

// SendTo copies n bytes from the current offset into w as they become
// visible, handing w a file each time (w.ReadFrom of an *os.File under an
// io.LimitedReader), so that a socket writer sends them with sendfile
// instead of copying them through user space: an agent streams a blob to
// its client while the swarm is still downloading it. The first section
// goes as soon as a byte is visible; after it, sections of sendBatch or
// what sendLinger brought.
func (r *Reader) SendTo(w io.ReaderFrom, n int64) (int64, error) {
	if r.f == nil {
		f, err := r.dl.OpenFile()
		if err != nil {
			return 0, err
		}
		r.f = f
	}
	var total int64
	for total < n {
		if r.off >= r.dl.size {
			return total, io.ErrUnexpectedEOF
		}
		var vis int64
		var err error
		if total == 0 {
			vis, err = r.dl.waitVisible(r.ctx, r.off)
		} else {
			vis, err = r.dl.waitBatch(r.ctx, r.off, r.off+min(sendBatch, n-total), sendLinger)
		}
		if err != nil {
			return total, err
		}
		c := min(n-total, vis-r.off)
		if _, err := r.f.Seek(r.off, io.SeekStart); err != nil {
			return total, fmt.Errorf("read %s: %w", r.dl.d, err)
		}
		m, err := w.ReadFrom(&io.LimitedReader{R: r.f, N: c})
		total += m
		r.off += m
		if err != nil {
			return total, err
		}
		if m < c {
			return total, fmt.Errorf("read %s: %w", r.dl.d, io.ErrUnexpectedEOF)
		}
	}
	return total, nil
}

// A follower's sections: a swarm makes a blob visible a piece at a time
// (32 KiB for blobs under 32 MiB), and a section for each was a seek, a
// sendfile and a wake-up per piece for every client. The first byte is not
// held back and the end goes when it is visible; in between a client waits
// at most sendLinger for bytes that are there.
const (
	sendBatch  = 256 << 10
	sendLinger = 250 * time.Millisecond
)

// Close releases the reader's reference.
func (r *Reader) Close() error {
	if !r.closed {
		r.closed = true
		if r.f != nil {
			r.f.Close()
		}
		r.dl.Release()
	}
	return nil
}
