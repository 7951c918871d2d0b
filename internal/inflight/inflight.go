// Package inflight coalesces work by key: the first caller of a key starts
// its job, every later caller joins the job that runs, and all of them see
// its progress. A job has two milestones: ready, when it has a value its
// waiters can start on (an origin's metainfo, as soon as upstream answered,
// long before the blob is in), and done, when it ended with its error.
//
// Unlike golang.org/x/sync/singleflight, waiters need not wait for the end:
// whatever the job streams (a growing file, piece hashes) they follow from
// the ready value on.
//
// Jobs come in two kinds; a key is used with one of them only. Do starts
// a job that runs to its end whoever waits (the origin's upstream fetch).
// Join starts or joins a job with members (the agent's pulls): when the
// last member leaves, the job goes on for the Group's Grace, then is
// stopped (its context is cancelled), unless someone joined meanwhile. A
// stopped job is never joined: a caller waits for it to end and starts a
// new one, so two jobs of one key never overlap.
package inflight

import (
	"context"
	"sync"
	"time"
)

// Group is a set of running jobs by key. The zero Group is ready to use.
type Group[K comparable, V any] struct {
	// Grace is how long a joined job goes on after its last member left.
	Grace time.Duration
	// Parent, if set, is the parent of every joined job's context: when it
	// ends, they are all stopped.
	Parent context.Context

	mu      sync.Mutex
	jobs    map[K]*Job[V]
	running sync.WaitGroup // every job's goroutine (Wait)
}

// Job is one running piece of work, shared by every caller of its key.
type Job[V any] struct {
	ready     chan struct{}
	done      chan struct{}
	readyOnce sync.Once
	val       V
	err       error

	// Of a joined job, guarded by its Group's mu.
	cancel  context.CancelFunc
	members int
	gen     int // changes on every Join and Leave (for the grace timer)
	stopped bool
}

func newJob[V any]() *Job[V] {
	return &Job[V]{ready: make(chan struct{}), done: make(chan struct{})}
}

// Do returns the job of k that runs, or starts run in a new goroutine;
// joined tells which. run calls j.SetReady once its value is there. When
// run returns, the job leaves the group (the next Do of k starts a new one),
// is ready (with the zero value, if run never set one) and done with run's
// error, in that order.
func (g *Group[K, V]) Do(k K, run func(j *Job[V]) error) (j *Job[V], joined bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if j, ok := g.jobs[k]; ok {
		return j, true
	}
	j = g.add(k)
	g.running.Add(1)
	go func() { g.end(k, j, run(j)) }()
	return j, false
}

// Join makes the caller a member of the job of k that runs, or starts run
// in a new goroutine with the caller as its only member; joined tells
// which. The caller must Leave the job when it no longer waits for it.
// run's context ends when the job is stopped or Parent ends. If the job of
// k is stopped and winding down, Join waits for its end, then starts a new
// one; it returns ctx's error if ctx ends first. When run returns, the job
// ends as with Do.
func (g *Group[K, V]) Join(ctx context.Context, k K, run func(ctx context.Context, j *Job[V]) error) (j *Job[V], joined bool, err error) {
	for {
		g.mu.Lock()
		j, ok := g.jobs[k]
		switch {
		case !ok:
			parent := g.Parent
			if parent == nil {
				parent = context.Background()
			}
			j = g.add(k)
			jctx, cancel := context.WithCancel(parent)
			j.cancel, j.members = cancel, 1
			g.mu.Unlock()
			g.running.Add(1)
			go func() { g.end(k, j, run(jctx, j)) }()
			return j, false, nil
		case !j.stopped:
			j.members++
			j.gen++
			g.mu.Unlock()
			return j, true, nil
		}
		g.mu.Unlock()
		select {
		case <-j.done:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
}

// Leave drops a member of a joined job; the job is stopped Grace after
// its last member left, unless another joined meanwhile.
func (g *Group[K, V]) Leave(j *Job[V]) {
	g.mu.Lock()
	defer g.mu.Unlock()
	j.members--
	j.gen++
	if j.members > 0 || j.stopped || j.cancel == nil {
		return
	}
	gen := j.gen
	time.AfterFunc(g.Grace, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if j.gen == gen && !j.stopped {
			j.stopped = true
			j.cancel()
		}
	})
}

// Stop marks a joined job stopped before its run returns, so that a later
// Join waits for its end and starts a new one rather than joining it: a
// pull that has failed readies its error, and a client that comes after
// that, a retry, must get a fresh pull, not the old error.
func (g *Group[K, V]) Stop(j *Job[V]) {
	g.mu.Lock()
	defer g.mu.Unlock()
	j.stopped = true
}

// add puts a new job of k in the group; g.mu is held.
func (g *Group[K, V]) add(k K) *Job[V] {
	if g.jobs == nil {
		g.jobs = map[K]*Job[V]{}
	}
	j := newJob[V]()
	g.jobs[k] = j
	return j
}

// end takes j out of the group once its run returned err, cancels a
// joined job's context, then readies j (if run did not) and marks it done.
func (g *Group[K, V]) end(k K, j *Job[V], err error) {
	g.mu.Lock()
	j.stopped = true
	if g.jobs[k] == j {
		delete(g.jobs, k)
	}
	g.mu.Unlock()
	if j.cancel != nil {
		j.cancel()
	}
	var zero V
	j.SetReady(zero)
	j.err = err
	close(j.done)
	g.running.Done()
}

// Wait blocks until every job started so far has ended: a role that stops
// waits for its work to finish (or to see its cancelled context) before
// its files are gone.
func (g *Group[K, V]) Wait() { g.running.Wait() }

// Running reports whether a job of k runs now.
func (g *Group[K, V]) Running(k K) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.jobs[k]
	return ok
}

// Len is the number of jobs running now.
func (g *Group[K, V]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.jobs)
}

// SetReady publishes v to the job's waiters; only the first call counts.
func (j *Job[V]) SetReady(v V) {
	j.readyOnce.Do(func() {
		j.val = v
		close(j.ready)
	})
}

// Ready is closed once the job has its value, or has ended without one.
func (j *Job[V]) Ready() <-chan struct{} { return j.ready }

// Value is what the job readied; call it once Ready is closed.
func (j *Job[V]) Value() V { return j.val }

// Done is closed when the job has ended.
func (j *Job[V]) Done() <-chan struct{} { return j.done }

// Err is the job's error; call it once Done is closed.
func (j *Job[V]) Err() error { return j.err }
