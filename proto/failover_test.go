package proto_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/proto"
)

// server answers every request with status (an OCI error for non-2xx, a
// tag list otherwise) and counts the requests.
type server struct {
	url  string
	hits atomic.Int32
}

func newServer(t *testing.T, status int, code string) *server {
	s := &server{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		if status/100 != 2 {
			proto.WriteError(w, r, proto.Errorf(status, code, "status %d", status))
			return
		}
		w.Header().Set("Content-Type", proto.ContentTypeJSON)
		_, _ = w.Write([]byte(`{"name":"x","tags":["` + r.Host + `"]}`))
	}))
	t.Cleanup(ts.Close)
	s.url = ts.URL
	return s
}

// deadURL is an address nobody listens on: a transport error.
func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + l.Addr().String()
	l.Close()
	return u
}

func urls(ss ...*server) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.url)
	}
	return out
}

func listTags(ctx context.Context, p proto.Policy, servers []string) ([]string, error) {
	c := proto.BuildIndexClient{}
	return proto.Failover(ctx, servers, p, func(ctx context.Context, s string) ([]string, error) {
		return c.Tags(ctx, s, "library/x")
	})
}

func TestFailover(t *testing.T) {
	ctx := context.Background()

	t.Run("4xx is final", func(t *testing.T) {
		a, b := newServer(t, http.StatusNotFound, proto.CodeNameUnknown), newServer(t, http.StatusOK, "")
		_, err := listTags(ctx, proto.Policy{}, urls(a, b))
		he, ok := proto.AsError(err)
		if !ok || he.Status != http.StatusNotFound || he.Code != proto.CodeNameUnknown {
			t.Fatalf("err = %v, want the first server's 404 NAME_UNKNOWN", err)
		}
		if b.hits.Load() != 0 {
			t.Fatal("the second server was asked after a 4xx")
		}
	})

	t.Run("5xx moves on", func(t *testing.T) {
		a, b := newServer(t, http.StatusServiceUnavailable, proto.CodeUnavailable), newServer(t, http.StatusOK, "")
		tags, err := listTags(ctx, proto.Policy{}, urls(a, b))
		if err != nil || len(tags) != 1 || "http://"+tags[0] != b.url {
			t.Fatalf("tags, err = %v, %v: want the second server's answer", tags, err)
		}
	})

	t.Run("transport error moves on", func(t *testing.T) {
		b := newServer(t, http.StatusOK, "")
		tags, err := listTags(ctx, proto.Policy{}, []string{deadURL(t), b.url})
		if err != nil || len(tags) != 1 {
			t.Fatalf("tags, err = %v, %v: want the second server's answer", tags, err)
		}
	})

	t.Run("all fail: joined error", func(t *testing.T) {
		a, dead := newServer(t, http.StatusBadGateway, proto.CodeDenied), deadURL(t)
		var observed []string
		p := proto.Policy{Observe: func(s string, err error) { observed = append(observed, s) }}
		_, err := listTags(ctx, p, []string{a.url, dead})
		j, ok := err.(interface{ Unwrap() []error })
		if !ok || len(j.Unwrap()) != 2 {
			t.Fatalf("err = %v, want both failures joined", err)
		}
		if he, ok := proto.AsError(err); !ok || he.Status != http.StatusBadGateway || he.Code != proto.CodeDenied {
			t.Fatalf("err = %v: the 5xx's OCI error is lost", err)
		}
		if len(observed) != 2 {
			t.Fatalf("observed %v, want both servers", observed)
		}
	})

	t.Run("move-on 4xx", func(t *testing.T) {
		a, b := newServer(t, http.StatusNotFound, proto.CodeBlobUnknown), newServer(t, http.StatusOK, "")
		p := proto.Policy{MoveOn: []int{http.StatusNotFound}}
		if _, err := listTags(ctx, p, urls(a, b)); err != nil || b.hits.Load() != 1 {
			t.Fatalf("err = %v, hits = %d: a 404 must move on with MoveOn", err, b.hits.Load())
		}
		// Every server says 404: that answer, not an outage.
		c := newServer(t, http.StatusNotFound, proto.CodeBlobUnknown)
		_, err := listTags(ctx, p, urls(a, c))
		if he, ok := proto.AsError(err); !ok || he.Status != http.StatusNotFound {
			t.Fatalf("err = %v, want the 404", err)
		}
		// A 404 and an outage: the outage is what failed.
		d := newServer(t, http.StatusServiceUnavailable, proto.CodeUnavailable)
		_, err = listTags(ctx, p, urls(a, d))
		if he, ok := proto.AsError(err); !ok || he.Status != http.StatusServiceUnavailable {
			t.Fatalf("err = %v, want the 503", err)
		}
	})

	t.Run("no servers", func(t *testing.T) {
		if _, err := listTags(ctx, proto.Policy{}, nil); !errors.Is(err, proto.ErrNoServers) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestFailoverHonoursCancel(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	t.Cleanup(slow.Close)
	next := newServer(t, http.StatusOK, "")

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := listTags(ctx, proto.Policy{}, []string{slow.URL, next.url})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if next.hits.Load() != 0 {
		t.Fatal("a server was asked after the context ended")
	}
}

// SplitDeadline gives a server that hangs only its share of the time, so
// the next one still answers within the caller's deadline.
func TestFailoverSplitDeadline(t *testing.T) {
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-hang:
		}
	}))
	t.Cleanup(slow.Close)
	next := newServer(t, http.StatusOK, "")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := listTags(ctx, proto.Policy{SplitDeadline: true}, []string{slow.URL, next.url}); err != nil {
		t.Fatalf("err = %v, want the second server's answer", err)
	}
}

// The typed clients decode a HEAD's error from HeaderError.
func TestHeadManifestError(t *testing.T) {
	s := newServer(t, http.StatusForbidden, proto.CodeDenied)
	_, err := proto.OriginClient{}.HeadManifest(context.Background(), s.url, "ghcr.io/x", "latest")
	if he, ok := proto.AsError(err); !ok || he.Status != http.StatusForbidden || he.Code != proto.CodeDenied {
		t.Fatalf("err = %v, want 403 DENIED", err)
	}
}
