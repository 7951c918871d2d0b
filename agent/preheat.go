package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-dev/shoal/proto"
)

// Preheat tasks: the agent heartbeats to every build-index it knows; the
// answer carries the preheat tasks assigned to it (the build-index cannot
// call the agent, whose ports are on loopback). A task pulls blobs through
// the agent's normal pull path (the swarm) into its store.
const (
	// heartbeatEvery is the heartbeat interval while tasks run (their
	// progress rides on it); with none running the agent long-polls.
	heartbeatEvery = time.Second
	// heartbeatRetry is the pause after a failed heartbeat.
	heartbeatRetry = 2 * time.Second
	// keepReports is how long a finished task is still reported.
	keepReports = 10 * time.Minute
	// taskParallel is how many blobs of one task are pulled at once.
	taskParallel = 4
)

// taskRun is one preheat task on this agent.
type taskRun struct {
	task     proto.Task
	total    int64
	done     atomic.Int64 // bytes of finished blobs
	mu       sync.Mutex
	active   map[digest.Digest]bool // being pulled
	state    string
	err      string
	finished time.Time
}

// preheats holds the tasks of one build-index, by job id.
type preheats struct {
	mu    sync.Mutex
	tasks map[string]*taskRun
}

// runHeartbeats heartbeats to each build-index until ctx ends.
func (a *Agent) runHeartbeats(ctx context.Context) {
	var wg sync.WaitGroup
	for _, bi := range a.cfg.BuildIndex {
		wg.Go(func() { a.heartbeatLoop(ctx, bi) })
	}
	wg.Wait()
}

func (a *Agent) heartbeatLoop(ctx context.Context, bi string) {
	ph := &preheats{tasks: map[string]*taskRun{}}
	c := proto.PreheatClient{Client: proto.Client{HTTP: &http.Client{Timeout: time.Minute, Transport: a.tls.Transport(&http.Transport{MaxIdleConnsPerHost: 2})}}}
	addr, _, _ := net.SplitHostPort(a.cfg.P2P.Listen)
	warned := false
	for ctx.Err() == nil {
		reports, running := ph.reports(a)
		hb := proto.Heartbeat{ID: a.cfg.NodeID, Address: addr, Version: agentVersion(), Tasks: reports, Wait: !running}
		start := time.Now()
		ans, err := c.Heartbeat(ctx, bi, hb)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if !warned {
				a.log.Warn("heartbeat to the build-index failed; retrying", "buildindex", bi, "err", err)
				warned = true
			}
			sleepCtx(ctx, heartbeatRetry)
			continue
		}
		warned = false
		for _, t := range ans.Tasks {
			ph.start(ctx, a, t)
		}
		if _, running := ph.reports(a); running || time.Since(start) < 100*time.Millisecond && len(ans.Tasks) == 0 {
			sleepCtx(ctx, heartbeatEvery)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// reports is the progress of every task to report, and whether any runs.
func (ph *preheats) reports(a *Agent) ([]proto.TaskProgress, bool) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	var out []proto.TaskProgress
	running := false
	for id, tr := range ph.tasks {
		tr.mu.Lock()
		if !tr.finished.IsZero() && time.Since(tr.finished) > keepReports {
			tr.mu.Unlock()
			delete(ph.tasks, id)
			continue
		}
		bytes := tr.done.Load()
		for d := range tr.active {
			if dl := a.store.Active(d); dl != nil {
				bytes += dl.Hashed()
				dl.Release()
			}
		}
		out = append(out, proto.TaskProgress{Job: id, State: tr.state, Bytes: min(bytes, tr.total), Total: tr.total, Error: tr.err})
		running = running || tr.state == proto.NodeRunning
		tr.mu.Unlock()
	}
	return out, running
}

// start runs t unless it runs or ran already (a task handed out again).
func (ph *preheats) start(ctx context.Context, a *Agent, t proto.Task) {
	ph.mu.Lock()
	defer ph.mu.Unlock()
	if _, ok := ph.tasks[t.Job]; ok {
		return
	}
	tr := &taskRun{task: t, state: proto.NodeRunning, active: map[digest.Digest]bool{}}
	for _, b := range t.Blobs {
		tr.total += b.Size
	}
	ph.tasks[t.Job] = tr
	go a.runTask(ctx, tr)
}

// runTask pulls every blob of the task into the store.
func (a *Agent) runTask(ctx context.Context, tr *taskRun) {
	start := time.Now()
	t := tr.task
	a.log.Info("preheat task started", "job", t.Job, "namespace", t.Namespace, "blobs", len(t.Blobs), "bytes", tr.total)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(taskParallel)
	for _, b := range t.Blobs {
		g.Go(func() error {
			if !t.PinUntil.IsZero() {
				if err := a.store.PinUntil(b.Digest, t.PinUntil); err != nil {
					return err
				}
			}
			tr.mu.Lock()
			tr.active[b.Digest] = true
			tr.mu.Unlock()
			var err error
			if b.Manifest {
				_, _, err = a.manifest(gctx, t.Namespace, b.Digest)
			} else {
				err = a.preheatBlob(gctx, t.Namespace, b.Digest)
			}
			tr.mu.Lock()
			delete(tr.active, b.Digest)
			tr.mu.Unlock()
			if err != nil {
				return fmt.Errorf("blob %s: %w", b.Digest, err)
			}
			tr.done.Add(b.Size)
			return nil
		})
	}
	err := g.Wait()
	tr.mu.Lock()
	tr.finished = time.Now()
	if err != nil {
		tr.state, tr.err = proto.NodeError, err.Error()
	} else {
		tr.state = proto.NodeDone
	}
	tr.mu.Unlock()
	if err != nil {
		a.log.Warn("preheat task failed", "job", t.Job, "err", err)
		return
	}
	a.log.Info("preheat task done", "job", t.Job, "bytes", tr.total, "duration", time.Since(start))
}

// preheatBlob pulls blob d through the swarm (as a client's GET would,
// sharing a running pull) and waits until it is committed.
func (a *Agent) preheatBlob(ctx context.Context, ns string, d digest.Digest) error {
	if d == emptyBlob {
		return nil
	}
	if _, err := a.store.Stat(d); err == nil {
		return nil
	}
	p, _, err := a.joinPull(ctx, ns, d)
	if err != nil {
		return err
	}
	defer a.pulls.Leave(p)
	select {
	case <-p.Ready():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := p.Value(); err != nil {
		return err
	}
	return a.store.WaitStored(ctx, d)
}

func agentVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.Main.Version
	}
	return ""
}
