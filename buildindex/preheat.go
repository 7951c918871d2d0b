package buildindex

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/internal/fsutil"
	"github.com/shoal-dev/shoal/proto"
)

// originParallel is how many blobs one job preheats on the origins at once.
const originParallel = 4

// agentsSettle is how long after its start the build-index waits before it
// picks a job's agents: its list of agents lives in memory, and after a
// restart every agent is heard again within its retry pause (2s).
const agentsSettle = 3 * time.Second

// jobRecord is what a job's file holds: its public state and the
// concurrency it was given. Never credentials.
type jobRecord struct {
	proto.PreheatJob
	Concurrency int `json:"concurrency"`
}

// job is a job in memory; guarded by preheater.mu.
type job struct {
	rec jobRecord
	// auth is the upstream Authorization Harbor gave the job: memory only,
	// lost on a restart (the job then fetches with the origins' own
	// credentials).
	auth string
}

// agentInfo is what the build-index knows of an agent from its heartbeats.
type agentInfo struct {
	id, address, version string
	seen                 time.Time
}

// preheater runs the preheat jobs of a build-index and keeps the agents
// that heartbeat to it. Jobs are files under <root>/preheat/<id>.json,
// written atomically; unfinished ones resume when the build-index starts.
type preheater struct {
	s   *Server
	log *slog.Logger
	dir string
	ttl time.Duration
	// started is when the build-index started (agentsSettle).
	started time.Time

	mu      sync.Mutex
	jobs    map[string]*job
	nextID  int64
	agents  map[string]*agentInfo
	changed chan struct{} // closed when agents may have new tasks
	wg      sync.WaitGroup
}

func newPreheater(s *Server) (*preheater, error) {
	p := &preheater{s: s, log: s.log, dir: filepath.Join(s.cfg.Root, "preheat"), ttl: s.cfg.AgentTTL,
		started: s.now(), jobs: map[string]*job{}, agents: map[string]*agentInfo{}, changed: make(chan struct{}), nextID: 1}
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("preheat jobs: %w", err)
	}
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, fmt.Errorf("preheat jobs: %w", err)
	}
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !proto.JobIDValid(id) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("preheat job %s: %w", id, err)
		}
		var rec jobRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.ID != id {
			p.log.Warn("skipping an unreadable preheat job file", "path", filepath.Join(p.dir, e.Name()), "err", err)
			continue
		}
		p.jobs[id] = &job{rec: rec}
		if n, _ := strconv.ParseInt(id, 10, 64); n >= p.nextID {
			p.nextID = n + 1
		}
	}
	return p, nil
}

// resume starts every unfinished job again (after a restart): resolution
// is kept, origins are asked again (a stored blob answers at once), agent
// tasks handed out before are handed out again.
func (p *preheater) resume(ctx context.Context) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range p.jobs {
		if j.rec.Finished() {
			continue
		}
		for i := range j.rec.Nodes {
			if n := &j.rec.Nodes[i]; n.Role == "agent" && n.State == proto.NodeRunning {
				n.State = proto.NodePending
			}
		}
		p.log.Info("resuming preheat job", "job", j.rec.ID, "image", j.rec.Image)
		p.start(ctx, j)
	}
}

// create records a new job and starts it.
func (p *preheater) create(ctx context.Context, rec jobRecord, auth string) (proto.PreheatJob, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.s.now().UTC()
	rec.ID = strconv.FormatInt(p.nextID, 10)
	p.nextID++
	rec.State = proto.JobPending
	rec.CreatedAt, rec.UpdatedAt = now, now
	rec.Nodes = []proto.NodeProgress{}
	j := &job{rec: rec, auth: auth}
	if err := p.saveLocked(j); err != nil {
		return proto.PreheatJob{}, err
	}
	p.jobs[rec.ID] = j
	p.log.Info("preheat job created", "job", rec.ID, "image", rec.Image, "scope", rec.Scope.Kind, "platforms", rec.Platforms)
	p.start(ctx, j)
	return p.snapshotLocked(j), nil
}

// start runs j in the background; p.mu is held.
func (p *preheater) start(ctx context.Context, j *job) {
	p.wg.Go(func() { p.run(ctx, j) })
}

// get returns a copy of job id.
func (p *preheater) get(id string) (proto.PreheatJob, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, ok := p.jobs[id]
	if !ok {
		return proto.PreheatJob{}, false
	}
	return p.snapshotLocked(j), true
}

func (p *preheater) snapshotLocked(j *job) proto.PreheatJob {
	out := j.rec.PreheatJob
	out.Nodes = slices.Clone(j.rec.Nodes)
	out.Blobs = slices.Clone(j.rec.Blobs)
	return out
}

// saveLocked writes j's file atomically.
func (p *preheater) saveLocked(j *job) error {
	b, err := json.MarshalIndent(j.rec, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(p.dir, j.rec.ID+".json"), b, p.dir); err != nil {
		return fmt.Errorf("preheat job %s: %w", j.rec.ID, err)
	}
	return nil
}

// update changes j under the lock and saves it.
func (p *preheater) update(j *job, f func(r *jobRecord)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&j.rec)
	j.rec.UpdatedAt = p.s.now().UTC()
	if err := p.saveLocked(j); err != nil {
		p.log.Error("save preheat job", "job", j.rec.ID, "err", err)
	}
}

// notifyLocked wakes the agents' long polls.
func (p *preheater) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// run takes a job through resolution, the origins and the agents.
func (p *preheater) run(ctx context.Context, j *job) {
	err := p.runPhases(ctx, j)
	if ctx.Err() != nil {
		return // the build-index stops; the job resumes at the next start
	}
	p.update(j, func(r *jobRecord) {
		r.State = proto.JobSuccess
		for _, n := range r.Nodes {
			if n.State == proto.NodeError && err == nil {
				err = fmt.Errorf("%s %s: %s", n.Role, n.Node, n.Error)
			}
		}
		if err != nil {
			r.State, r.Error = proto.JobFailure, err.Error()
		}
	})
	p.mu.Lock()
	j.auth = "" // done with it
	p.notifyLocked()
	p.mu.Unlock()
	lvl := slog.LevelInfo
	if err != nil {
		lvl = slog.LevelWarn
	}
	p.log.Log(ctx, lvl, "preheat job finished", "job", j.rec.ID, "image", j.rec.Image, "state", j.rec.State, "err", err)
}

func (p *preheater) runPhases(ctx context.Context, j *job) error {
	p.update(j, func(r *jobRecord) { r.State = proto.JobRunning })
	p.mu.Lock()
	rec, auth := j.rec, j.auth
	p.mu.Unlock()
	if len(rec.Blobs) == 0 {
		rctx, cancel := context.WithTimeout(ctx, p.s.cfg.ResolveTimeout*4)
		d, blobs, err := p.s.resolveImage(rctx, rec.Image, rec.Platforms, auth)
		cancel()
		if err != nil {
			return err
		}
		p.update(j, func(r *jobRecord) { r.Digest, r.Blobs = d, blobs })
		rec.Blobs = blobs
	}
	if err := p.preheatOrigins(ctx, j, rec.Namespace, rec.Blobs, rec.PinUntil, auth); err != nil {
		return err
	}
	if rec.Scope.Kind == proto.ScopeOrigins || rec.Scope.Kind == "" {
		return nil
	}
	return p.preheatAgents(ctx, j)
}

// preheatOrigins has the origin that owns each blob on the ring (the next
// one when it fails) fetch it from upstream and store it. Manifests were
// stored by the resolution already.
func (p *preheater) preheatOrigins(ctx context.Context, j *job, ns string, blobs []proto.PreheatBlob, pin time.Time, auth string) error {
	oc := proto.OriginClient{Client: proto.Client{HTTP: p.s.hc}}
	byOrigin := map[string]int{}
	p.mu.Lock()
	for _, b := range blobs {
		if b.Manifest {
			continue
		}
		o := p.s.origins.Pick(b.Digest.String(), 0)[0]
		i, ok := byOrigin[o]
		if !ok {
			i = nodeIndex(&j.rec, o, "origin", hostOf(o))
			byOrigin[o] = i
			j.rec.Nodes[i].Total, j.rec.Nodes[i].Bytes = 0, 0
		}
		j.rec.Nodes[i].Total += b.Size
		j.rec.Nodes[i].State = proto.NodeRunning
	}
	p.mu.Unlock()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(originParallel)
	for _, b := range blobs {
		if b.Manifest {
			continue
		}
		owner := byOrigin[p.s.origins.Pick(b.Digest.String(), 0)[0]]
		g.Go(func() error {
			_, err := proto.Failover(gctx, p.s.origins.Pick(b.Digest.String(), 0), proto.Policy{},
				func(ctx context.Context, origin string) (struct{}, error) {
					return struct{}{}, oc.Preheat(ctx, origin, ns, b.Digest, pin, auth)
				})
			p.mu.Lock()
			n := &j.rec.Nodes[owner]
			if err != nil {
				n.State, n.Error = proto.NodeError, fmt.Sprintf("blob %s: %v", b.Digest, err)
			} else {
				n.Bytes += b.Size
			}
			p.mu.Unlock()
			if err != nil {
				return fmt.Errorf("origins: blob %s: %w", b.Digest, err)
			}
			return nil
		})
	}
	err := g.Wait()
	p.update(j, func(r *jobRecord) {
		for _, i := range byOrigin {
			if n := &r.Nodes[i]; n.State == proto.NodeRunning {
				n.State = proto.NodeDone
			}
		}
	})
	return err
}

// nodeIndex finds or adds node name of role; p.mu is held.
func nodeIndex(r *jobRecord, name, role, addr string) int {
	for i, n := range r.Nodes {
		if n.Node == name && n.Role == role {
			return i
		}
	}
	r.Nodes = append(r.Nodes, proto.NodeProgress{Node: name, Role: role, Address: addr, State: proto.NodePending})
	return len(r.Nodes) - 1
}

func hostOf(u string) string {
	if _, rest, ok := strings.Cut(u, "://"); ok {
		u = rest
	}
	h, _, _ := strings.Cut(u, "/")
	return h
}

// preheatAgents picks the job's agents (unless a run before this restart
// did), then waits while heartbeats hand them their tasks and report back.
func (p *preheater) preheatAgents(ctx context.Context, j *job) error {
	if wait := agentsSettle - p.s.now().Sub(p.started); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	p.mu.Lock()
	hasAgents := slices.ContainsFunc(j.rec.Nodes, func(n proto.NodeProgress) bool { return n.Role == "agent" })
	if !hasAgents {
		p.selectAgentsLocked(j)
	}
	p.notifyLocked()
	p.mu.Unlock()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		p.mu.Lock()
		open := 0
		now := p.s.now()
		for i := range j.rec.Nodes {
			n := &j.rec.Nodes[i]
			if n.Role != "agent" || n.State == proto.NodeDone || n.State == proto.NodeError {
				continue
			}
			if a := p.agents[n.Node]; a == nil || now.Sub(a.seen) > p.ttl {
				n.State, n.Error = proto.NodeError, fmt.Sprintf("agent gone: no heartbeat for %s", p.ttl)
				_ = p.saveLocked(j)
				p.notifyLocked()
				continue
			}
			open++
		}
		p.mu.Unlock()
		if open == 0 {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// selectAgentsLocked adds the agents of j's scope as pending nodes.
func (p *preheater) selectAgentsLocked(j *job) {
	now := p.s.now()
	var live []string
	for id, a := range p.agents {
		if now.Sub(a.seen) <= p.ttl {
			live = append(live, id)
		}
	}
	sort.Strings(live)
	sc := j.rec.Scope
	var picked []string
	switch sc.Kind {
	case proto.ScopeAllAgents:
		picked = live
	case proto.ScopePercentage:
		n := (len(live)*sc.Percentage + 99) / 100
		rand.Shuffle(len(live), func(a, b int) { live[a], live[b] = live[b], live[a] })
		picked = live[:n]
		sort.Strings(picked)
	case proto.ScopeAgents:
		picked = sc.Agents
	}
	var total int64
	for _, b := range j.rec.Blobs {
		total += b.Size
	}
	for _, id := range picked {
		addr := ""
		if a := p.agents[id]; a != nil {
			addr = a.address
		}
		i := nodeIndex(&j.rec, id, "agent", addr)
		j.rec.Nodes[i].Total = total
		if !slices.Contains(live, id) {
			j.rec.Nodes[i].State, j.rec.Nodes[i].Error = proto.NodeError, "agent unknown: no heartbeat from it"
		}
	}
	_ = p.saveLocked(j)
}

// heartbeat records an agent, applies its reports and answers its tasks,
// holding the answer (a long poll) while there is none and hb.Wait asks.
func (p *preheater) heartbeat(ctx context.Context, hb proto.Heartbeat) proto.HeartbeatAnswer {
	wait := min(10*time.Second, p.ttl/3)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		p.agents[hb.ID] = &agentInfo{id: hb.ID, address: hb.Address, version: hb.Version, seen: p.s.now()}
		p.applyReportsLocked(hb)
		tasks := p.tasksLocked(hb)
		changed := p.changed
		p.mu.Unlock()
		if len(tasks) > 0 || !hb.Wait {
			return proto.HeartbeatAnswer{Tasks: tasks, TTL: proto.Duration(p.ttl)}
		}
		hb.Tasks = nil // applied
		select {
		case <-changed:
		case <-deadline.C:
			hb.Wait = false
		case <-ctx.Done():
			return proto.HeartbeatAnswer{Tasks: []proto.Task{}, TTL: proto.Duration(p.ttl)}
		}
	}
}

func (p *preheater) applyReportsLocked(hb proto.Heartbeat) {
	for _, t := range hb.Tasks {
		j := p.jobs[t.Job]
		if j == nil || j.rec.Finished() {
			continue
		}
		for i := range j.rec.Nodes {
			n := &j.rec.Nodes[i]
			if n.Role != "agent" || n.Node != hb.ID || n.State == proto.NodeDone || n.State == proto.NodeError {
				continue
			}
			n.Bytes, n.State = t.Bytes, t.State
			if t.Total > 0 {
				n.Total = t.Total
			}
			if t.State == proto.NodeError {
				n.Error = t.Error
			}
			if n.State == proto.NodeDone || n.State == proto.NodeError {
				_ = p.saveLocked(j)
				p.notifyLocked() // a slot is free
			}
		}
	}
}

// tasksLocked hands out hb.ID's tasks: every running one it did not
// report (an answer lost, an agent restarted) and pending ones while the
// job has fewer than its concurrency running.
func (p *preheater) tasksLocked(hb proto.Heartbeat) []proto.Task {
	reported := map[string]bool{}
	for _, t := range hb.Tasks {
		reported[t.Job] = true
	}
	ids := make([]string, 0, len(p.jobs))
	for id, j := range p.jobs {
		if !j.rec.Finished() {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(a, b int) bool { return len(ids[a]) < len(ids[b]) || len(ids[a]) == len(ids[b]) && ids[a] < ids[b] })
	tasks := []proto.Task{}
	for _, id := range ids {
		j := p.jobs[id]
		running := 0
		mine := -1
		for i, n := range j.rec.Nodes {
			if n.Role != "agent" {
				continue
			}
			if n.State == proto.NodeRunning {
				running++
			}
			if n.Node == hb.ID {
				mine = i
			}
		}
		if mine < 0 {
			continue
		}
		n := &j.rec.Nodes[mine]
		switch {
		case n.State == proto.NodeRunning && !reported[id]:
		case n.State == proto.NodePending && running < j.rec.Concurrency:
			n.State = proto.NodeRunning
			_ = p.saveLocked(j)
		default:
			continue
		}
		tasks = append(tasks, proto.Task{Job: id, Namespace: j.rec.Namespace, Blobs: j.rec.Blobs, PinUntil: j.rec.PinUntil})
	}
	return tasks
}

// errNoJob: no job of that id.
var errNoJob = errors.New("no such preheat job")

// resolveImage resolves image (registry/repo:tag or @digest) through the
// origins, with auth as the upstream credentials when given, to its
// manifest digest and every blob and manifest to preheat: an index's
// manifests are filtered by platforms (none: all).
func (s *Server) resolveImage(ctx context.Context, image string, platforms []string, auth string) (digest.Digest, []proto.PreheatBlob, error) {
	ref, err := parseImage(image)
	if err != nil {
		return "", nil, err
	}
	ns := ref.namespace()
	hc := proto.Client{HTTP: s.hc}
	if auth != "" {
		hc.Header = map[string][]string{proto.HeaderUpstreamAuth: {auth}}
	}
	oc := proto.OriginClient{Client: hc}
	d := ref.digest
	var top tagInfo
	if d == "" {
		if auth == "" {
			e, _, err := s.lookup(ctx, ns, ref.tag)
			if err != nil {
				return "", nil, fmt.Errorf("resolve %s: %w", image, err)
			}
			d = e.Digest
		} else {
			top, err = proto.Failover(ctx, s.origins.Pick(ns+":"+ref.tag, 0), proto.Policy{SplitDeadline: true},
				func(ctx context.Context, origin string) (tagInfo, error) {
					info, err := oc.HeadManifest(ctx, origin, ns, ref.tag)
					if err != nil {
						return tagInfo{}, headErr(err, ns, ref.tag)
					}
					return info, nil
				})
			if err != nil {
				return "", nil, fmt.Errorf("resolve %s: %w", image, err)
			}
			d = top.Digest
		}
	}
	w := &walker{ctx: ctx, s: s, oc: oc, ns: ns, platforms: platforms, seen: map[digest.Digest]bool{}}
	if err := w.walk(d, 0); err != nil {
		return "", nil, fmt.Errorf("resolve %s: %w", image, err)
	}
	return d, w.blobs, nil
}

// walker collects the blobs of a manifest tree.
type walker struct {
	ctx       context.Context
	s         *Server
	oc        proto.OriginClient
	ns        string
	platforms []string
	seen      map[digest.Digest]bool
	blobs     []proto.PreheatBlob
}

type descriptor struct {
	MediaType string         `json:"mediaType"`
	Digest    digest.Digest  `json:"digest"`
	Size      int64          `json:"size"`
	Platform  *platformField `json:"platform,omitempty"`
}

type platformField struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
}

func (w *walker) walk(d digest.Digest, depth int) error {
	if depth > 4 {
		return fmt.Errorf("manifest %s: nested too deep", d)
	}
	type manifest struct {
		body []byte
		mt   string
	}
	m, err := proto.Failover(w.ctx, w.s.origins.Pick(d.String(), 0), proto.Policy{},
		func(ctx context.Context, origin string) (manifest, error) {
			body, mt, err := w.oc.Manifest(ctx, origin, w.ns, d)
			return manifest{body, mt}, err
		})
	if err != nil {
		return fmt.Errorf("manifest %s: %w", d, err)
	}
	if !w.seen[d] {
		w.seen[d] = true
		w.blobs = append(w.blobs, proto.PreheatBlob{Digest: d, Size: int64(len(m.body)), MediaType: m.mt, Manifest: true})
	}
	var parsed struct {
		Manifests []descriptor `json:"manifests"`
		Config    *descriptor  `json:"config"`
		Layers    []descriptor `json:"layers"`
	}
	if err := json.Unmarshal(m.body, &parsed); err != nil {
		return fmt.Errorf("manifest %s: %w", d, err)
	}
	matched := 0
	for _, c := range parsed.Manifests {
		if !w.wants(c.Platform) {
			continue
		}
		matched++
		if err := w.walk(c.Digest, depth+1); err != nil {
			return err
		}
	}
	if len(parsed.Manifests) > 0 && matched == 0 {
		return fmt.Errorf("index %s: no manifest for platforms %v", d, w.platforms)
	}
	var blobs []descriptor
	if parsed.Config != nil && parsed.Config.Digest != "" {
		blobs = append(blobs, *parsed.Config)
	}
	blobs = append(blobs, parsed.Layers...)
	for _, b := range blobs {
		if err := b.Digest.Validate(); err != nil || b.Size < 0 {
			return fmt.Errorf("manifest %s: bad descriptor %q: %v", d, b.Digest, err)
		}
		if !w.seen[b.Digest] {
			w.seen[b.Digest] = true
			w.blobs = append(w.blobs, proto.PreheatBlob{Digest: b.Digest, Size: b.Size, MediaType: b.MediaType})
		}
	}
	return nil
}

// wants tells whether an index entry of platform pl is preheated.
func (w *walker) wants(pl *platformField) bool {
	if len(w.platforms) == 0 {
		return true
	}
	if pl == nil {
		return false
	}
	for _, want := range w.platforms {
		p := strings.Split(want, "/")
		if p[0] == pl.OS && p[1] == pl.Architecture && (len(p) < 3 || p[2] == pl.Variant) {
			return true
		}
	}
	return false
}

// Agents lists the agents heard from within agent_ttl, by id.
func (s *Server) Agents() []string {
	p := s.preheat
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for id, a := range p.agents {
		if s.now().Sub(a.seen) <= p.ttl {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}
