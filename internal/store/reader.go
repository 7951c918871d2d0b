package store

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Reader reads a Download as it grows: a read past the visible bytes blocks
// until they arrive, the download fails, or ctx ends. It implements
// io.ReadSeeker (for http.ServeContent) and io.ReaderAt.
type Reader struct {
	dl     *Download
	ctx    context.Context
	off    int64
	closed bool
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

// Close releases the reader's reference.
func (r *Reader) Close() error {
	if !r.closed {
		r.closed = true
		r.dl.Release()
	}
	return nil
}
