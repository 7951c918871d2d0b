package inflight

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// closed fails t unless ch closes within a generous deadline.
func closed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: timed out", what)
	}
}

// stays fails t if ch closes within d: a timer that must not act gets
// time to act (there is no state to poll for).
func stays(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s", what)
	case <-time.After(d):
	}
}

// untilStopped is a run that readies v, then returns once its context ends.
func untilStopped(runs *atomic.Int32, v int) func(context.Context, *Job[int]) error {
	return func(ctx context.Context, j *Job[int]) error {
		runs.Add(1)
		j.SetReady(v)
		<-ctx.Done()
		return ctx.Err()
	}
}

// Concurrent joiners of one key share one run; once the last one left,
// the job is stopped Grace later and ends with its run's error.
func TestJoinSharesAndStopsAfterLastLeave(t *testing.T) {
	g := Group[string, int]{Grace: 10 * time.Millisecond}
	var runs, joinedCount atomic.Int32
	jobs := make([]*Job[int], 8)
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Go(func() {
			j, joined, err := g.Join(context.Background(), "k", untilStopped(&runs, 42))
			if err != nil {
				t.Error(err)
			}
			if joined {
				joinedCount.Add(1)
			}
			jobs[i] = j
		})
	}
	wg.Wait()
	j := jobs[0]
	for _, o := range jobs {
		if o != j {
			t.Fatal("joiners of one key got different jobs")
		}
	}
	if joinedCount.Load() != 7 {
		t.Fatalf("%d joined, want 7", joinedCount.Load())
	}
	closed(t, j.Ready(), "ready")
	if j.Value() != 42 || runs.Load() != 1 {
		t.Fatalf("value %d after %d runs; want 42 after 1", j.Value(), runs.Load())
	}
	for _, o := range jobs[1:] {
		g.Leave(o)
	}
	stays(t, j.Done(), 5*g.Grace, "stopped while a member stayed")
	g.Leave(j)
	closed(t, j.Done(), "stop after the last Leave")
	if !errors.Is(j.Err(), context.Canceled) {
		t.Fatalf("err %v, want %v", j.Err(), context.Canceled)
	}
	if g.Running("k") || g.Len() != 0 {
		t.Fatal("the job is still in the group after it ended")
	}
}

// A member that joins within Grace of the last Leave keeps the job: the
// timer of the earlier Leave does nothing.
func TestJoinWithinGraceKeepsTheJob(t *testing.T) {
	g := Group[string, int]{Grace: 20 * time.Millisecond}
	var runs atomic.Int32
	j, _, _ := g.Join(context.Background(), "k", untilStopped(&runs, 1))
	g.Leave(j)
	j2, joined, err := g.Join(context.Background(), "k", untilStopped(&runs, 2))
	if err != nil || !joined || j2 != j {
		t.Fatalf("joined %v, same job %v, err %v; want a join of the running job", joined, j2 == j, err)
	}
	stays(t, j.Done(), 10*g.Grace, "stopped although a member came back within grace")
	g.Leave(j2)
	closed(t, j.Done(), "stop after the last Leave")
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
}

// A Join that finds the job stopped but still winding down waits for its
// end, then starts a new run: two runs of one key never overlap. A Join
// that gives up while waiting returns its context's error.
func TestJoinDuringWindDownStartsAFreshRun(t *testing.T) {
	g := Group[string, int]{Grace: time.Millisecond}
	stopping, release := make(chan struct{}), make(chan struct{})
	var running, overlapped atomic.Int32
	run := func(ctx context.Context, j *Job[int]) error {
		if running.Add(1) > 1 {
			overlapped.Store(1)
		}
		defer running.Add(-1)
		j.SetReady(1)
		<-ctx.Done()
		select {
		case <-stopping:
		default:
			close(stopping)
			<-release // the first run winds down slowly
		}
		return ctx.Err()
	}
	old, _, _ := g.Join(context.Background(), "k", run)
	g.Leave(old)
	closed(t, stopping, "stop after the last Leave")

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if j, _, err := g.Join(gone, "k", run); !errors.Is(err, context.Canceled) || j != nil {
		t.Fatalf("a cancelled waiting Join returned %v, %v; want nil, %v", j, err, context.Canceled)
	}

	r := joinAfterWindDown(t, &g, run, old, release)
	closed(t, old.Done(), "the old job's end")
	if !g.Running("k") {
		t.Fatal("the fresh job is not in the group")
	}
	g.Leave(r)
	closed(t, r.Done(), "the fresh job's stop")
	if overlapped.Load() != 0 {
		t.Fatal("two runs of one key overlapped")
	}
}

// Parent's end stops every joined job, members or not; a job that ends
// on its own is ready with the zero value and done with its error.
func TestJoinParentAndEnd(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	g := Group[int, *int]{Grace: time.Hour, Parent: parent}
	j, joined, err := g.Join(context.Background(), 1, func(ctx context.Context, _ *Job[*int]) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if joined || err != nil {
		t.Fatalf("joined %v, err %v; want a new job", joined, err)
	}
	cancel()
	closed(t, j.Done(), "stop when Parent ends")
	if j.Value() != nil || !errors.Is(j.Err(), context.Canceled) {
		t.Fatalf("value %v, err %v; want nil, %v", j.Value(), j.Err(), context.Canceled)
	}
	g.Leave(j) // after the end: a no-op

	failed := errors.New("boom")
	g2 := Group[int, *int]{Grace: time.Hour}
	j2, _, _ := g2.Join(context.Background(), 1, func(context.Context, *Job[*int]) error { return failed })
	closed(t, j2.Ready(), "ready at the end")
	closed(t, j2.Done(), "done")
	if j2.Value() != nil || !errors.Is(j2.Err(), failed) {
		t.Fatalf("value %v, err %v; want nil, %v", j2.Value(), j2.Err(), failed)
	}
	g2.Leave(j2)
}

// Wait returns once every job started so far (joined or not) has ended.
func TestWaitForEveryJob(t *testing.T) {
	var g Group[string, int]
	release := make(chan struct{})
	g.Do("a", func(*Job[int]) error { <-release; return nil })
	if _, _, err := g.Join(context.Background(), "b", func(ctx context.Context, _ *Job[int]) error { <-release; return nil }); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() { g.Wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("Wait returned while two jobs ran")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after the jobs ended")
	}
}

// A job stopped by its run (it failed, and readied its error) is not
// joined in the moment before its run returns: the next caller waits for
// its end and starts a new job.
func TestJoinAfterStopStartsANewJob(t *testing.T) {
	g := Group[string, error]{Grace: time.Hour}
	failed := errors.New("upstream down")
	release := make(chan struct{})
	first, _, err := g.Join(context.Background(), "k", func(_ context.Context, j *Job[error]) error {
		g.Stop(j)
		j.SetReady(failed)
		<-release // the run's last steps (logging, metrics) after readying
		return failed
	})
	if err != nil {
		t.Fatal(err)
	}
	closed(t, first.Ready(), "first job ready")
	if first.Value() != failed {
		t.Fatalf("first job's value %v, want %v", first.Value(), failed)
	}
	r := joinAfterWindDown(t, &g, func(_ context.Context, j *Job[error]) error {
		j.SetReady(nil)
		return nil
	}, first, release)
	closed(t, r.Ready(), "second job ready")
	if r.Value() != nil {
		t.Fatalf("second job's value %v, want nil", r.Value())
	}
	g.Leave(first)
	g.Leave(r)
}

// joinAfterWindDown joins k while old, stopped, winds down until release
// is closed: the Join must not return before, and must then start a fresh
// job, which it returns.
func joinAfterWindDown[V any](t *testing.T, g *Group[string, V], run func(context.Context, *Job[V]) error, old *Job[V], release chan struct{}) *Job[V] {
	t.Helper()
	type result struct {
		j      *Job[V]
		joined bool
		err    error
	}
	res := make(chan result, 1)
	go func() {
		j, joined, err := g.Join(context.Background(), "k", run)
		res <- result{j, joined, err}
	}()
	select {
	case r := <-res:
		t.Fatalf("a Join returned %v, joined %v (same job %v) while the stopped job wound down", r.err, r.joined, r.j == old)
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	var r result
	select {
	case r = <-res:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting Join never returned")
	}
	if r.err != nil || r.joined || r.j == old {
		t.Fatalf("joined %v, same job %v, err %v; want a fresh job", r.joined, r.j == old, r.err)
	}
	return r.j
}
