package proto

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Preheat paths: jobs and agent heartbeats on the build-index, a blob's
// preheat on the origin, and Harbor's two P2P provider APIs (served by the
// build-index as Harbor sends them).
const (
	ParamJobID = "id"

	PatternPreheat    = "/v1/preheat"
	PatternPreheatJob = "/v1/preheat/{id}"
	PatternHeartbeat  = "/v1/agents/heartbeat"
	// Origin: fetch a blob from upstream (if not held) and answer once it
	// is stored and verified.
	PatternOriginPreheat = PatternBlob + "/preheat"

	// Harbor's Dragonfly driver (Dragonfly's open API).
	PatternDragonflyHealth = "/healthy"
	PatternDragonflyJobs   = "/oapi/v1/jobs"
	PatternDragonflyJob    = "/oapi/v1/jobs/{id}"
	// Harbor's Kraken driver (the registry notification endpoint).
	PatternKrakenNotify = "/registry/notifications"

	// QueryPinUntil (unix seconds) keeps a preheated blob out of the
	// origin's disk GC until then.
	QueryPinUntil = "pin_until"
)

// HeaderUpstreamAuth carries an Authorization value (Harbor's, per
// preheat job) from the build-index to the origins, which use it instead
// of their configured credentials for that request's upstream fetches. It
// is never stored or logged.
const HeaderUpstreamAuth = "X-Shoal-Upstream-Authorization"

// Job states.
const (
	JobPending = "PENDING"
	JobRunning = "RUNNING"
	JobSuccess = "SUCCESS"
	JobFailure = "FAILURE"
)

// Node (and task) states.
const (
	NodePending = "pending"
	NodeRunning = "running"
	NodeDone    = "done"
	NodeError   = "error"
)

// Scope kinds.
const (
	ScopeOrigins    = "origins"
	ScopeAllAgents  = "all_agents"
	ScopeAgents     = "agents"
	ScopePercentage = "percentage"
)

// Scope says where a job puts the blobs: "origins" | "all_agents" |
// {"agents":[ids]} | {"percentage":N}. Origins are always preheated first.
type Scope struct {
	Kind       string   // one of the Scope* constants
	Agents     []string // ScopeAgents
	Percentage int      // ScopePercentage, 1..100
}

// MarshalJSON writes the scope in its request form.
func (s Scope) MarshalJSON() ([]byte, error) {
	switch s.Kind {
	case ScopeAgents:
		return json.Marshal(map[string][]string{"agents": s.Agents})
	case ScopePercentage:
		return json.Marshal(map[string]int{"percentage": s.Percentage})
	case "":
		return json.Marshal(ScopeOrigins)
	}
	return json.Marshal(s.Kind)
}

// UnmarshalJSON reads and checks any of the scope's forms.
func (s *Scope) UnmarshalJSON(b []byte) error {
	var kind string
	if err := json.Unmarshal(b, &kind); err == nil {
		if kind != ScopeOrigins && kind != ScopeAllAgents {
			return fmt.Errorf("unknown scope %q: want \"origins\", \"all_agents\", {\"agents\":[...]} or {\"percentage\":N}", kind)
		}
		*s = Scope{Kind: kind}
		return nil
	}
	var obj struct {
		Agents     *[]string `json:"agents"`
		Percentage *int      `json:"percentage"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&obj); err != nil {
		return fmt.Errorf("want \"origins\", \"all_agents\", {\"agents\":[...]} or {\"percentage\":N}: %v", err)
	}
	switch {
	case obj.Agents != nil && obj.Percentage == nil:
		if len(*obj.Agents) == 0 {
			return fmt.Errorf("agents: name at least one agent")
		}
		*s = Scope{Kind: ScopeAgents, Agents: *obj.Agents}
	case obj.Percentage != nil && obj.Agents == nil:
		if *obj.Percentage < 1 || *obj.Percentage > 100 {
			return fmt.Errorf("percentage %d: want 1..100", *obj.Percentage)
		}
		*s = Scope{Kind: ScopePercentage, Percentage: *obj.Percentage}
	default:
		return fmt.Errorf("want exactly one of {\"agents\":[...]} or {\"percentage\":N}")
	}
	return nil
}

// PreheatRequest is the body of POST /v1/preheat.
type PreheatRequest struct {
	// Image is registry/repo:tag or registry/repo@sha256:...
	Image string `json:"image"`
	// Platforms (os/arch[/variant]) pick manifests of an index; empty: all.
	Platforms []string `json:"platforms,omitempty"`
	// Scope defaults to origins.
	Scope Scope `json:"scope,omitzero"`
	// Pin is a duration ("24h") the blobs stay out of disk GC.
	Pin string `json:"pin,omitempty"`
	// Concurrency is how many agents pull at once (default 16).
	Concurrency int `json:"concurrency,omitempty"`
}

// PreheatCreated answers POST /v1/preheat.
type PreheatCreated struct {
	ID string `json:"id"`
}

// PreheatBlob is one blob (or manifest) of a job.
type PreheatBlob struct {
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	MediaType string        `json:"media_type,omitempty"`
	// Manifest: fetched as a manifest (kept with its media type).
	Manifest bool `json:"manifest,omitempty"`
}

// NodeProgress is one node's part of a job.
type NodeProgress struct {
	Node    string `json:"node"`    // agent id, or origin URL
	Role    string `json:"role"`    // "origin" or "agent"
	Address string `json:"address"` // an agent's IP, an origin's host
	State   string `json:"state"`   // pending, running, done, error
	Bytes   int64  `json:"bytes"`
	Total   int64  `json:"total"`
	Error   string `json:"error,omitempty"`
}

// PreheatJob answers GET /v1/preheat/{id}.
type PreheatJob struct {
	ID        string         `json:"id"`
	Image     string         `json:"image"`
	Namespace string         `json:"namespace"`
	Digest    digest.Digest  `json:"digest,omitempty"`
	Platforms []string       `json:"platforms,omitempty"`
	Scope     Scope          `json:"scope"`
	PinUntil  time.Time      `json:"pin_until,omitzero"`
	State     string         `json:"state"`
	Error     string         `json:"error,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	UpdatedAt time.Time      `json:"updated_at"`
	Blobs     []PreheatBlob  `json:"blobs,omitempty"`
	Nodes     []NodeProgress `json:"nodes"`
}

// Finished tells whether a job reached SUCCESS or FAILURE.
func (j PreheatJob) Finished() bool { return j.State == JobSuccess || j.State == JobFailure }

// Heartbeat is what an agent posts to each build-index it knows.
type Heartbeat struct {
	ID      string         `json:"id"`
	Address string         `json:"address"`
	Version string         `json:"version"`
	Tasks   []TaskProgress `json:"tasks,omitempty"`
	// Wait asks the build-index to hold the answer until a task is there
	// for the agent (or WaitMax passed): a long poll.
	Wait bool `json:"wait,omitempty"`
}

// TaskProgress is an agent's report of one task.
type TaskProgress struct {
	Job   string `json:"job"`
	State string `json:"state"` // running, done, error
	Bytes int64  `json:"bytes"`
	Total int64  `json:"total"`
	Error string `json:"error,omitempty"`
}

// HeartbeatAnswer carries the tasks assigned to the agent.
type HeartbeatAnswer struct {
	Tasks []Task `json:"tasks"`
	// TTL: an agent silent this long is taken as gone.
	TTL Duration `json:"ttl"`
}

// Task is one job's work for one agent: pull these blobs into the store.
type Task struct {
	Job       string        `json:"job"`
	Namespace string        `json:"namespace"`
	Blobs     []PreheatBlob `json:"blobs"`
	PinUntil  time.Time     `json:"pin_until,omitzero"`
}

// Duration is a time.Duration written as a string ("30s").
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// OriginPreheatURL is the URL that makes the origin at base fetch blob d
// of ns (if not held), pinned until pin (zero: not pinned).
func OriginPreheatURL(base, ns string, d digest.Digest, pin time.Time) string {
	u := BlobURL(base, ns, d) + "/preheat"
	if !pin.IsZero() {
		u += "?" + QueryPinUntil + "=" + strconv.FormatInt(pin.Unix(), 10)
	}
	return u
}

// PreheatURL is the jobs endpoint of the build-index at base.
func PreheatURL(base string) string { return trim(base) + PatternPreheat }

// PreheatJobURL is job id on the build-index at base.
func PreheatJobURL(base, id string) string { return PreheatURL(base) + "/" + url.PathEscape(id) }

// HeartbeatURL is the heartbeat endpoint of the build-index at base.
func HeartbeatURL(base string) string { return trim(base) + PatternHeartbeat }

// Preheat asks origin to fetch blob d of ns and waits until it is stored.
// auth, if not empty, is the upstream Authorization for that fetch.
func (c OriginClient) Preheat(ctx context.Context, origin, ns string, d digest.Digest, pin time.Time, auth string) error {
	h := http.Header{}
	if auth != "" {
		h.Set(HeaderUpstreamAuth, auth)
	}
	resp, err := c.Do(ctx, "origin", origin, http.MethodPost, OriginPreheatURL(origin, ns, d, pin), h)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// PreheatClient drives preheat jobs on a build-index.
type PreheatClient struct {
	Client
	// Token is the build-index's admin token ("" = none).
	Token string
}

func (c PreheatClient) send(ctx context.Context, method, u string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ContentTypeJSON)
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("build-index: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return DecodeError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSON)).Decode(out); err != nil {
		return fmt.Errorf("build-index: %s: %w", u, err)
	}
	return nil
}

// Create starts a job and returns its id.
func (c PreheatClient) Create(ctx context.Context, server string, req PreheatRequest) (string, error) {
	var out PreheatCreated
	err := c.send(ctx, http.MethodPost, PreheatURL(server), req, &out)
	return out.ID, err
}

// Job returns the state of job id.
func (c PreheatClient) Job(ctx context.Context, server, id string) (PreheatJob, error) {
	var out PreheatJob
	err := c.send(ctx, http.MethodGet, PreheatJobURL(server, id), nil, &out)
	return out, err
}

// Heartbeat posts hb and returns the agent's tasks.
func (c PreheatClient) Heartbeat(ctx context.Context, server string, hb Heartbeat) (HeartbeatAnswer, error) {
	var out HeartbeatAnswer
	err := c.send(ctx, http.MethodPost, HeartbeatURL(server), hb, &out)
	return out, err
}

// JobIDValid tells whether id can name a job (decimal digits).
func JobIDValid(id string) bool {
	if id == "" || len(id) > 19 || strings.Trim(id, "0123456789") != "" {
		return false
	}
	return true
}
