// Package inflight coalesces work by key: the first caller of a key starts
// its job, every later caller joins the job that runs, and all of them see
// its progress. A job has two milestones: ready, when it has a value its
// waiters can start on (an origin's metainfo, as soon as upstream answered,
// long before the blob is in), and done, when it ended with its error.
//
// Unlike golang.org/x/sync/singleflight, waiters need not wait for the end:
// whatever the job streams (a growing file, piece hashes) they follow from
// the ready value on.
package inflight

import "sync"

// Group is a set of running jobs by key. The zero Group is ready to use.
type Group[K comparable, V any] struct {
	mu   sync.Mutex
	jobs map[K]*Job[V]
}

// Job is one running piece of work, shared by every caller of its key.
type Job[V any] struct {
	ready     chan struct{}
	done      chan struct{}
	readyOnce sync.Once
	val       V
	err       error
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
	if g.jobs == nil {
		g.jobs = map[K]*Job[V]{}
	}
	j = &Job[V]{ready: make(chan struct{}), done: make(chan struct{})}
	g.jobs[k] = j
	go func() {
		err := run(j)
		g.mu.Lock()
		delete(g.jobs, k)
		g.mu.Unlock()
		var zero V
		j.SetReady(zero)
		j.err = err
		close(j.done)
	}()
	return j, false
}

// Running reports whether a job of k runs now.
func (g *Group[K, V]) Running(k K) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.jobs[k]
	return ok
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
