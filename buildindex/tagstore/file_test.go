package tagstore_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex/tagstore"
	"github.com/shoal-dev/shoal/buildindex/tagstore/storetest"
)

func TestFileConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tagstore.TagStore {
		s, err := tagstore.NewFile(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestFileSurvivesReopen: entries are on disk, one file per tag, and a new
// store on the same root reads them; leftovers of an interrupted write are
// not tags.
func TestFileSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s1, err := tagstore.NewFile(root)
	if err != nil {
		t.Fatal(err)
	}
	e := tagstore.Entry{Digest: digest.FromString("x"), MediaType: "application/vnd.oci.image.index.v1+json", Size: 1,
		ResolvedAt: time.Unix(1700000000, 0).UTC()}
	if err := s1.Put(ctx, "127.0.0.1:5000/test/img", "v1", e); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "tags", "127.0.0.1:5000%2Ftest%2Fimg")
	if _, err := os.Stat(filepath.Join(dir, "v1.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".tmp-123"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	s2, err := tagstore.NewFile(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s2.Get(ctx, "127.0.0.1:5000/test/img", "v1")
	if err != nil || got.Digest != e.Digest || !got.ResolvedAt.Equal(e.ResolvedAt) {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
	if tags, err := s2.List(ctx, "127.0.0.1:5000/test/img"); err != nil || len(tags) != 1 || tags[0] != "v1" {
		t.Fatalf("List after reopen: %v %v", tags, err)
	}
}

// TestFileRefusesUnsafeNames: names that would leave the store's directory.
func TestFileRefusesUnsafeNames(t *testing.T) {
	s, err := tagstore.NewFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := tagstore.Entry{Digest: digest.FromString("x")}
	for _, p := range [][2]string{{"..", "v1"}, {".", "v1"}, {"", "v1"}, {"a", "../x"}, {"a", ".hidden"}, {"a", ""}} {
		if err := s.Put(context.Background(), p[0], p[1], e); err == nil {
			t.Errorf("Put(%q, %q) succeeded", p[0], p[1])
		}
	}
}
