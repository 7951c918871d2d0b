package buildindex

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/proto"
)

// maxPin bounds a job's pin.
const maxPin = 366 * 24 * time.Hour

// adminAuth guards the preheat and Harbor endpoints with admin_token,
// accepted the ways Harbor's provider instances send it: "Authorization:
// Bearer <token>", HTTP Basic with the token as password (any user), or
// the header admin_token_header set to the token. An empty token leaves
// them open.
func adminAuth(token, header string, names []string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if token == "" && len(names) == 0 {
			return next
		}
		want := []byte(token)
		eq := func(got string) bool {
			return token != "" && got != "" && subtle.ConstantTimeCompare([]byte(got), want) == 1
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A verified client certificate (mtls) is an admin identity too.
			ok := httpx.CertAdmin(r, names)
			if v, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found && !ok {
				ok = eq(v)
			} else if _, pass, found := r.BasicAuth(); found && !ok {
				ok = eq(pass)
			}
			if !ok && header != "" {
				ok = eq(r.Header.Get(header))
			}
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="shoal-admin"`)
				httpx.WriteError(w, r, httpx.Errorf(http.StatusUnauthorized, httpx.CodeUnauthorized,
					"this endpoint needs the build-index's admin token (Bearer, Basic password or the %s header)", header))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// mountPreheat adds the preheat, heartbeat and Harbor routes.
func (s *Server) mountPreheat(r chi.Router) {
	if s.cfg.AdminToken == "" {
		s.log.Warn("admin_token is empty: anyone who reaches the build-index can start preheat jobs")
	}
	admin := r.With(adminAuth(s.cfg.AdminToken, s.cfg.AdminTokenHeader, s.cfg.TLS.AdminNames))
	admin.Post(proto.PatternPreheat, s.handleCreateJob)
	admin.Get(proto.PatternPreheatJob, s.handleGetJob)
	r.Post(proto.PatternHeartbeat, s.handleHeartbeat)
	r.Get(proto.PatternDragonflyHealth, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	admin.Post(proto.PatternDragonflyJobs, s.handleDragonflyCreate)
	admin.Get(proto.PatternDragonflyJob, s.handleDragonflyGet)
	admin.Post(proto.PatternKrakenNotify, s.handleKrakenNotify)
}

// imageRef is a parsed image reference.
type imageRef struct {
	registry, repo, tag string
	digest              digest.Digest
}

// namespace is the origins' name of the repository: registry host first.
func (r imageRef) namespace() string { return r.registry + "/" + r.repo }

func (r imageRef) String() string {
	if r.digest != "" {
		return r.namespace() + "@" + r.digest.String()
	}
	return r.namespace() + ":" + r.tag
}

// parseImage parses registry/repo:tag or registry/repo@sha256:...
func parseImage(s string) (imageRef, error) {
	if s == "" {
		return imageRef{}, errors.New("missing")
	}
	r, err := name.ParseReference(s, name.StrictValidation)
	if err != nil {
		if r, err = name.ParseReference(s); err != nil {
			return imageRef{}, err
		}
	}
	out := imageRef{registry: r.Context().RegistryStr(), repo: r.Context().RepositoryStr()}
	if out.registry == name.DefaultRegistry {
		out.registry = "docker.io"
	}
	switch v := r.(type) {
	case name.Digest:
		d, err := digest.Parse(v.DigestStr())
		if err == nil && d.Algorithm() != digest.SHA256 {
			err = digest.ErrDigestUnsupported
		}
		if err != nil {
			return imageRef{}, err
		}
		out.digest = d
	case name.Tag:
		out.tag = v.TagStr()
	}
	if err := checkNamespace(out.namespace()); err != nil {
		return imageRef{}, err
	}
	return out, nil
}

func badField(field, format string, args ...any) error {
	return httpx.Errorf(http.StatusBadRequest, httpx.CodeUnsupported, "%s: %s", field, fmt.Sprintf(format, args...))
}

// checkRequest validates a job request and turns it into a record.
func (s *Server) checkRequest(req proto.PreheatRequest, rawScope json.RawMessage) (jobRecord, error) {
	ref, err := parseImage(req.Image)
	if err != nil {
		return jobRecord{}, httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "image %q: %v", req.Image, err)
	}
	rec := jobRecord{PreheatJob: proto.PreheatJob{Image: ref.String(), Namespace: ref.namespace(), Platforms: req.Platforms,
		Scope: proto.Scope{Kind: proto.ScopeOrigins}}, Concurrency: req.Concurrency}
	if len(rawScope) > 0 && !bytes.Equal(rawScope, []byte("null")) {
		if err := json.Unmarshal(rawScope, &rec.Scope); err != nil {
			return jobRecord{}, badField("scope", "%v", err)
		}
	}
	for i, p := range req.Platforms {
		f := strings.Split(p, "/")
		if len(f) < 2 || len(f) > 3 || f[0] == "" || f[1] == "" {
			return jobRecord{}, badField(fmt.Sprintf("platforms[%d]", i), "%q: want os/arch[/variant]", p)
		}
	}
	if req.Pin != "" {
		pin, err := time.ParseDuration(req.Pin)
		if err != nil || pin <= 0 || pin > maxPin {
			return jobRecord{}, badField("pin", "%q: want a duration from 1s to %s, like \"24h\"", req.Pin, maxPin)
		}
		rec.PinUntil = s.now().Add(pin).UTC().Truncate(time.Second)
	}
	switch {
	case req.Concurrency < 0 || req.Concurrency > 100000:
		return jobRecord{}, badField("concurrency", "%d: want 1..100000 (0: the default, %d)", req.Concurrency, s.cfg.PreheatConcurrency)
	case req.Concurrency == 0:
		rec.Concurrency = s.cfg.PreheatConcurrency
	}
	return rec, nil
}

// decodeBody decodes a JSON body into v, strictly when strict.
func decodeBody(r *http.Request, v any, strict bool) error {
	dec := json.NewDecoder(r.Body) // bounded by http.max_body_bytes
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return httpx.Errorf(http.StatusRequestEntityTooLarge, httpx.CodeSizeInvalid, "body: more than %d bytes (http.max_body_bytes)", tooBig.Limit)
		}
		return httpx.Errorf(http.StatusBadRequest, httpx.CodeUnsupported, "body: %v", err)
	}
	return nil
}

func (s *Server) handleCreateJob(w http.ResponseWriter, r *http.Request) {
	var in struct {
		proto.PreheatRequest
		Scope json.RawMessage `json:"scope"`
	}
	if err := decodeBody(r, &in, true); err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	rec, err := s.checkRequest(in.PreheatRequest, in.Scope)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	j, err := s.preheat.create(s.runCtx(), rec, "")
	if err != nil {
		httpx.WriteError(w, r, httpx.DiskError(err))
		return
	}
	writeJSON(w, http.StatusAccepted, proto.PreheatCreated{ID: j.ID})
}

func (s *Server) jobParam(w http.ResponseWriter, r *http.Request) (proto.PreheatJob, bool) {
	id := chi.URLParam(r, proto.ParamJobID)
	if !proto.JobIDValid(id) {
		httpx.WriteError(w, r, badField("id", "%q: want a number", id))
		return proto.PreheatJob{}, false
	}
	j, ok := s.preheat.get(id)
	if !ok {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusNotFound, httpx.CodeNameUnknown, "%v: %s", errNoJob, id))
	}
	return j, ok
}

func (s *Server) handleGetJob(w http.ResponseWriter, r *http.Request) {
	if j, ok := s.jobParam(w, r); ok {
		writeJSON(w, http.StatusOK, j)
	}
}

func (s *Server) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	var hb proto.Heartbeat
	if err := decodeBody(r, &hb, false); err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	if hb.ID == "" || len(hb.ID) > 253 {
		httpx.WriteError(w, r, badField("id", "%q: want the agent's node id (1..253 characters)", hb.ID))
		return
	}
	writeJSON(w, http.StatusOK, s.preheat.heartbeat(r.Context(), hb))
}
