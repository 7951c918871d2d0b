package tagstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/shoal-dev/shoal/internal/fsutil"
)

// File keeps one small JSON file per tag:
// <root>/tags/<path-escaped namespace>/<tag>.json. Writes go to a temporary
// file that is renamed into place, so a reader (or a restart) sees either
// the old entry or the new one, never half of one.
type File struct {
	dir string
}

// NewFile opens (creating if needed) a file store under root.
func NewFile(root string) (*File, error) {
	dir := filepath.Join(root, "tags")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tagstore %s: %w", root, err)
	}
	return &File{dir: dir}, nil
}

// nsDir is the directory of ns. PathEscape turns every "/" into "%2F", so a
// namespace is always one path element; the caller's grammar check rules
// out "." and "..".
func (f *File) nsDir(ns string) (string, error) {
	esc := url.PathEscape(ns)
	if ns == "" || esc == "." || esc == ".." || len(esc) > 255 {
		return "", fmt.Errorf("tagstore: namespace %q cannot be stored", ns)
	}
	return filepath.Join(f.dir, esc), nil
}

func (f *File) path(ns, tag string) (string, error) {
	dir, err := f.nsDir(ns)
	if err != nil {
		return "", err
	}
	if tag == "" || strings.ContainsAny(tag, `/\`) || strings.HasPrefix(tag, ".") {
		return "", fmt.Errorf("tagstore: tag %q cannot be stored", tag)
	}
	return filepath.Join(dir, tag+".json"), nil
}

func (f *File) Get(_ context.Context, ns, tag string) (Entry, error) {
	p, err := f.path(ns, tag)
	if err != nil {
		return Entry{}, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return Entry{}, ErrNotFound
	}
	if err != nil {
		return Entry{}, fmt.Errorf("tagstore: %s:%s: %w", ns, tag, err)
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("tagstore: %s:%s: corrupt entry %s: %w", ns, tag, p, err)
	}
	if err := e.Digest.Validate(); err != nil {
		return Entry{}, fmt.Errorf("tagstore: %s:%s: corrupt entry %s: %w", ns, tag, p, err)
	}
	return e, nil
}

func (f *File) Put(_ context.Context, ns, tag string, e Entry) error {
	p, err := f.path(ns, tag)
	if err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("tagstore: %s:%s: %w", ns, tag, err)
	}
	// The temporary name starts with "." so List never takes it for a tag
	// (tags cannot start with ".").
	if err := fsutil.WriteFileAtomic(p, b, ""); err != nil {
		return fmt.Errorf("tagstore: %s:%s: %w", ns, tag, err)
	}
	return nil
}

func (f *File) List(_ context.Context, ns string) ([]string, error) {
	dir, err := f.nsDir(ns)
	if err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("tagstore: list %s: %w", ns, err)
	}
	var tags []string
	for _, e := range ents {
		name := e.Name()
		if tag, ok := strings.CutSuffix(name, ".json"); ok && !strings.HasPrefix(name, ".") && e.Type().IsRegular() {
			tags = append(tags, tag)
		}
	}
	slices.Sort(tags)
	return tags, nil
}

var _ TagStore = (*File)(nil)
