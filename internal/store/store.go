// Package store is the node's content-addressed blob cache:
// <root>/blobs/sha256/<2 hex>/<hex>. Bytes land in <root>/downloads/ and are
// renamed into place only after their sha256 matches the digest, so a blob
// under blobs/ is always whole and verified.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"
)

var (
	// ErrNotFound: no verified blob with this digest in the store.
	ErrNotFound = errors.New("blob not in store")
	// ErrDigestMismatch: the bytes do not hash to the digest they claim.
	ErrDigestMismatch = errors.New("content does not match digest")
	// ErrInProgress: a download of this digest is already running.
	ErrInProgress = errors.New("download already in progress")
	// ErrNoSpace: the disk has no room for a new download (the space of a
	// whole blob is reserved when its download starts).
	ErrNoSpace = errors.New("no space left for the blob in the cache")
)

// Store is safe for concurrent use.
type Store struct {
	root string
	log  *slog.Logger

	mu       sync.Mutex
	active   map[digest.Digest]*Download
	verified map[digest.Digest]bool // blobs hashed by this process
	verify   singleflight.Group
	gc       gcState
	now      func() time.Time // the clock of access times (tests replace it)
}

// Open prepares root. Leftovers in downloads/ from an earlier run are removed:
// they were never verified, so they are never served.
func Open(root string, log *slog.Logger) (*Store, error) {
	for _, d := range []string{"blobs/sha256", "downloads"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("store %s: %w", root, err)
		}
	}
	if err := probeWritable(filepath.Join(root, "downloads")); err != nil {
		return nil, fmt.Errorf("store %s: not writable: %w", root, err)
	}
	s := &Store{root: root, log: log, active: map[digest.Digest]*Download{}, verified: map[digest.Digest]bool{}, now: time.Now}
	s.gc.init()
	ents, err := os.ReadDir(s.downloadsDir())
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", root, err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(s.downloadsDir(), e.Name())); err != nil {
			return nil, fmt.Errorf("store %s: remove leftover %s: %w", root, e.Name(), err)
		}
	}
	if len(ents) > 0 {
		log.Info("removed unfinished downloads from an earlier run", "count", len(ents), "root", root)
	}
	if err := s.scanBlobs(); err != nil {
		return nil, fmt.Errorf("store %s: %w", root, err)
	}
	return s, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) downloadsDir() string { return filepath.Join(s.root, "downloads") }

// Path is where the verified blob d lives.
func (s *Store) Path(d digest.Digest) string {
	h := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), h[:2], h)
}

func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("digest %q: %w", d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %q: only sha256 is supported", d)
	}
	return nil
}

// Stat returns the size of the verified blob d, or ErrNotFound.
func (s *Store) Stat(d digest.Digest) (int64, error) {
	if err := checkDigest(d); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.Path(d))
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", d, err)
	}
	s.touch(d)
	return fi.Size(), nil
}

// Open returns the verified blob d for reading. A blob this process has not
// written or hashed yet (one from an earlier run) is hashed first; a blob
// that no longer matches its digest is removed and reported as ErrNotFound.
func (s *Store) Open(d digest.Digest) (*os.File, error) {
	if err := checkDigest(d); err != nil {
		return nil, err
	}
	s.mu.Lock()
	ok := s.verified[d]
	s.mu.Unlock()
	if !ok {
		if _, err, _ := s.verify.Do(string(d), func() (any, error) { return nil, s.verifyFile(d) }); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(s.Path(d))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d, err)
	}
	s.touch(d)
	return f, nil
}

func (s *Store) verifyFile(d digest.Digest) error {
	f, err := os.Open(s.Path(d))
	if errors.Is(err, os.ErrNotExist) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", d, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("verify %s: %w", d, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != d.Encoded() {
		s.log.Error("cached blob does not match its digest; removing it", "digest", d, "path", s.Path(d))
		if err := os.Remove(s.Path(d)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove corrupt %s: %w", d, err)
		}
		s.mu.Lock()
		s.dropLocked(d)
		s.mu.Unlock()
		return ErrNotFound
	}
	s.mu.Lock()
	s.verified[d] = true
	s.mu.Unlock()
	return nil
}

// Delete removes the blob d (if any) and its metadata files.
func (s *Store) Delete(d digest.Digest) error {
	if err := checkDigest(d); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(d)
}

// WaitStored blocks until blob d is committed (nil), its running download
// fails (its error), or ctx ends. With no download of d running and none
// stored it answers ErrNotFound at once. A download's last byte reaches its
// readers before the commit (sync and rename) ends: whoever checks the
// store right after a pull waits here rather than racing the commit.
func (s *Store) WaitStored(ctx context.Context, d digest.Digest) error {
	for {
		if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
			return err
		}
		dl := s.Active(d)
		if dl == nil {
			// The commit may have landed between Stat and Active.
			_, err := s.Stat(d)
			return err
		}
		err := dl.Wait(ctx)
		dl.Release()
		if err != nil {
			return fmt.Errorf("wait for %s: %w", d, err)
		}
	}
}

// Active returns the running download of d, or nil.
func (s *Store) Active(d digest.Digest) *Download {
	s.mu.Lock()
	defer s.mu.Unlock()
	dl := s.active[d]
	if dl != nil {
		dl.acquire()
	}
	return dl
}

// syncFile makes a committed blob durable; a var so that tests can make
// the disk slow or failing.
var syncFile = (*os.File).Sync

func (s *Store) commit(dl *Download) error {
	dst := s.Path(dl.d)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("commit %s: %w", dl.d, err)
	}
	if err := syncFile(dl.f); err != nil {
		return fmt.Errorf("commit %s: sync: %w", dl.d, err)
	}
	if err := os.Rename(dl.tmp, dst); err != nil {
		return fmt.Errorf("commit %s: %w", dl.d, err)
	}
	s.mu.Lock()
	s.verified[dl.d] = true
	delete(s.active, dl.d)
	s.addLocked(dl.d, dl.size)
	s.mu.Unlock()
	return nil
}

func (s *Store) forget(dl *Download) {
	s.mu.Lock()
	if s.active[dl.d] == dl {
		delete(s.active, dl.d)
	}
	s.mu.Unlock()
}

// probeWritable fails now, with the reason, if dir cannot take a file: a
// read-only or foreign-owned cache would otherwise fail every pull later.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, "probe.*")
	if err != nil {
		return err
	}
	_, werr := f.Write([]byte{0})
	cerr := f.Close()
	rerr := os.Remove(f.Name())
	return errors.Join(werr, cerr, rerr)
}
