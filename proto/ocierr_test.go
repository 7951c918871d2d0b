package proto

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// An error passes from one server to the next unchanged — status, code,
// message and detail — whether it was asked for with GET (the body) or
// HEAD (HeaderError), over a real HTTP connection.
func TestErrorPassesThroughGetAndHead(t *testing.T) {
	sent := Errorf(http.StatusForbidden, CodeDenied, "registry %q is not configured\nsecond line", "upstream.test:5000")
	sent.Detail = map[string]any{"registry": "upstream.test:5000", "upstreams": []string{"a", "b"}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { WriteError(w, r, sent) }))
	t.Cleanup(srv.Close)

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, _ := http.NewRequest(method, srv.URL, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := DecodeError(resp)
		resp.Body.Close()
		if got.Status != sent.Status || got.Code != sent.Code || got.Message != sent.Message {
			t.Fatalf("%s: decoded %d %s %q, want %d %s %q", method, got.Status, got.Code, got.Message, sent.Status, sent.Code, sent.Message)
		}
		detail, err := json.Marshal(got.Detail)
		if err != nil || string(detail) != `{"registry":"upstream.test:5000","upstreams":["a","b"]}` {
			t.Fatalf("%s: detail %s (%v)", method, detail, err)
		}
		if method == http.MethodHead && resp.Header.Get(HeaderError) == "" {
			t.Fatalf("HEAD: no %s header", HeaderError)
		}
	}
}

// A server that sent neither body nor header leaves the status to speak.
func TestDecodeErrorWithoutBody(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.WriteHeader(http.StatusNotFound)
	got := DecodeError(rec.Result())
	if got.Status != http.StatusNotFound || got.Code != "UNKNOWN" {
		t.Fatalf("decoded %+v", got)
	}
}
