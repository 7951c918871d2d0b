// Package storetest is the conformance suite every tagstore.TagStore
// implementation must pass.
package storetest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex/tagstore"
)

// Run checks the contract of the stores newStore returns (a fresh, empty
// store per call).
func Run(t *testing.T, newStore func(t *testing.T) tagstore.TagStore) {
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	entry := func(s string) tagstore.Entry {
		return tagstore.Entry{Digest: digest.FromString(s), MediaType: "application/vnd.oci.image.manifest.v1+json",
			Size: int64(len(s)), ResolvedAt: at, Source: tagstore.SourceUpstream}
	}

	t.Run("get unknown", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Get(ctx, "test/img", "v1"); !errors.Is(err, tagstore.ErrNotFound) {
			t.Fatalf("Get of an unknown tag: %v, want ErrNotFound", err)
		}
		if tags, err := s.List(ctx, "test/img"); err != nil || len(tags) != 0 {
			t.Fatalf("List of an unknown namespace: %v, %v", tags, err)
		}
	})

	t.Run("put get replace", func(t *testing.T) {
		s := newStore(t)
		for _, e := range []tagstore.Entry{entry("a"), entry("b")} {
			if err := s.Put(ctx, "test/img", "v1", e); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, "test/img", "v1")
			if err != nil {
				t.Fatal(err)
			}
			if !got.ResolvedAt.Equal(e.ResolvedAt) {
				t.Fatalf("resolved_at %s, want %s", got.ResolvedAt, e.ResolvedAt)
			}
			got.ResolvedAt = e.ResolvedAt
			if got != e {
				t.Fatalf("got %+v, want %+v", got, e)
			}
		}
	})

	t.Run("namespaces and tags are distinct", func(t *testing.T) {
		s := newStore(t)
		puts := []struct{ ns, tag, v string }{
			{"test/img", "b", "1"}, {"test/img", "a", "2"}, {"test/img", "A_1.0-x", "3"},
			{"test", "img", "4"}, {"127.0.0.1:5000/test/img", "a", "5"}, {"test/img2", "c", "6"},
		}
		for _, p := range puts {
			if err := s.Put(ctx, p.ns, p.tag, entry(p.v)); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range puts {
			got, err := s.Get(ctx, p.ns, p.tag)
			if err != nil || got.Digest != entry(p.v).Digest {
				t.Fatalf("%s:%s: %+v %v", p.ns, p.tag, got, err)
			}
		}
		tags, err := s.List(ctx, "test/img")
		if err != nil || !slices.Equal(tags, []string{"A_1.0-x", "a", "b"}) {
			t.Fatalf("List: %v %v", tags, err)
		}
	})

	t.Run("concurrent puts", func(t *testing.T) {
		s := newStore(t)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				if err := s.Put(ctx, "test/img", "v1", entry(string(rune('a'+i)))); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if _, err := s.Get(ctx, "test/img", "v1"); err != nil {
			t.Fatal(err)
		}
		if tags, _ := s.List(ctx, "test/img"); !slices.Equal(tags, []string{"v1"}) {
			t.Fatalf("List after concurrent puts: %v", tags)
		}
	})
}
