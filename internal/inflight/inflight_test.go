package inflight

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Concurrent callers of one key share one job and see its value as soon
// as it is readied, before the job ends; the error comes at the end.
func TestGroupCoalesces(t *testing.T) {
	var g Group[string, int]
	var runs atomic.Int32
	release := make(chan struct{})
	failed := errors.New("boom")
	run := func(j *Job[int]) error {
		runs.Add(1)
		j.SetReady(42)
		j.SetReady(7) // only the first counts
		<-release
		return failed
	}
	var wg sync.WaitGroup
	jobs := make([]*Job[int], 8)
	joinedCount := atomic.Int32{}
	for i := range jobs {
		wg.Go(func() {
			var joined bool
			jobs[i], joined = g.Do("k", run)
			if joined {
				joinedCount.Add(1)
			}
		})
	}
	wg.Wait()
	if joinedCount.Load() != 7 {
		t.Fatalf("%d joined, want 7", joinedCount.Load())
	}
	for _, j := range jobs {
		if j != jobs[0] {
			t.Fatal("callers of one key got different jobs")
		}
	}
	j := jobs[0]
	<-j.Ready()
	if runs.Load() != 1 {
		t.Fatalf("%d runs, want 1", runs.Load())
	}
	if j.Value() != 42 {
		t.Fatalf("value %d, want 42", j.Value())
	}
	select {
	case <-j.Done():
		t.Fatal("done before run returned")
	default:
	}
	if !g.Running("k") || g.Running("other") {
		t.Fatal("Running is wrong while the job runs")
	}
	close(release)
	<-j.Done()
	if !errors.Is(j.Err(), failed) {
		t.Fatalf("err %v, want %v", j.Err(), failed)
	}
	if g.Running("k") {
		t.Fatal("the job is still in the group after it ended")
	}
}

// A job that ends without a value is ready with the zero value; the next
// caller of its key starts a new job.
func TestGroupEndedJobIsReadyAndForgotten(t *testing.T) {
	var g Group[int, *int]
	j, joined := g.Do(1, func(*Job[*int]) error { return nil })
	if joined {
		t.Fatal("the first caller joined")
	}
	select {
	case <-j.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("a job that ended was never ready")
	}
	<-j.Done()
	if j.Value() != nil || j.Err() != nil {
		t.Fatalf("value %v, err %v; want nil, nil", j.Value(), j.Err())
	}
	// The job leaves the group before Done closes.
	if g.Running(1) {
		t.Fatal("still running after Done")
	}
	if j2, joined := g.Do(1, func(*Job[*int]) error { return nil }); joined || j2 == j {
		t.Fatal("a caller after the end joined the old job")
	}
}
