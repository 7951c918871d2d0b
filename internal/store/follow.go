package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/fsutil"
)

// Blob is a readable blob: a verified file, or a download being followed.
type Blob interface {
	io.ReadSeekCloser
	io.ReaderAt
}

// Content is what to hand http.ServeContent for b: the file itself when b is
// a complete blob, the download's Reader (see SendTo) when it is followed,
// so that the kernel sends the bytes either way; else b.
func Content(b Blob) io.ReadSeeker {
	if p, ok := b.(*pinnedBlob); ok {
		switch r := p.Blob.(type) {
		case *os.File:
			return r
		case *Reader:
			return r
		}
	}
	return b
}

// OpenOrFollow returns the verified blob d, or a reader that follows its
// running download, with the blob's size; ErrNotFound if neither exists.
// The blob is not evicted until the reader is closed.
func (s *Store) OpenOrFollow(ctx context.Context, d digest.Digest) (Blob, int64, error) {
	if err := checkDigest(d); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	unpin := s.pinLocked(d)
	dl := s.active[d]
	if dl != nil {
		dl.acquire()
	}
	s.mu.Unlock()
	if dl != nil {
		r := dl.NewReader(ctx)
		dl.Release()
		return &pinnedBlob{Blob: r, unpin: unpin}, dl.Size(), nil
	}
	return s.openPinned(d, unpin)
}

// OpenStored returns the verified, committed blob d with its size, or
// ErrNotFound (also while it is still downloading: see OpenOrFollow).
// The blob is not evicted until it is closed.
func (s *Store) OpenStored(d digest.Digest) (Blob, int64, error) {
	if err := checkDigest(d); err != nil {
		return nil, 0, err
	}
	s.mu.Lock()
	unpin := s.pinLocked(d)
	s.mu.Unlock()
	return s.openPinned(d, unpin)
}

func (s *Store) openPinned(d digest.Digest, unpin func()) (Blob, int64, error) {
	f, err := s.Open(d)
	if err != nil {
		unpin()
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		unpin()
		return nil, 0, fmt.Errorf("stat %s: %w", d, err)
	}
	return &pinnedBlob{Blob: f, unpin: unpin}, fi.Size(), nil
}

// WriteMeta stores metadata named name beside blob d (atomically).
func (s *Store) WriteMeta(d digest.Digest, name string, data []byte) error {
	if err := checkDigest(d); err != nil {
		return err
	}
	dst := s.Path(d) + "." + name
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("write %s of %s: %w", name, d, err)
	}
	if err := fsutil.WriteFileAtomic(dst, data, s.downloadsDir()); err != nil {
		return fmt.Errorf("write %s of %s: %w", name, d, err)
	}
	return nil
}

// ReadMeta returns metadata named name of blob d, or ErrNotFound.
func (s *Store) ReadMeta(d digest.Digest, name string) ([]byte, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(s.Path(d) + "." + name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	return b, err
}
