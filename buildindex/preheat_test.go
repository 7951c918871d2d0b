package buildindex_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/proto"
)

// TestHeartbeatsHandOutTasksWithinConcurrency: three agents long-poll the
// build-index at once; a job on all of them with concurrency 1 hands out
// one task at a time, each agent gets exactly its own, and the job ends
// SUCCESS once all reported done. The origin holds the blobs afterwards.
func TestHeartbeatsHandOutTasksWithinConcurrency(t *testing.T) {
	e := newEnv(t)
	clk := newClock()
	s, _ := startIndex(t, "", clk, e.origin.URL())
	clk.Advance(time.Minute) // past the settle time after the start
	e.push(t, "v1", 5)
	ns := e.reg.Host() + "/" + testRepo

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := proto.PreheatClient{}
	var running, maxRunning atomic.Int32
	var mu sync.Mutex
	got := map[string][]string{} // agent -> jobs
	var wg sync.WaitGroup
	for i := range 3 {
		id := fmt.Sprintf("node-%d", i)
		wg.Go(func() {
			var reports []proto.TaskProgress
			for ctx.Err() == nil {
				ans, err := c.Heartbeat(ctx, s.URL(), proto.Heartbeat{ID: id, Address: "127.0.0.1", Tasks: reports, Wait: true})
				if err != nil {
					return
				}
				for _, task := range ans.Tasks {
					if n := running.Add(1); n > maxRunning.Load() {
						maxRunning.Store(n)
					}
					if task.Namespace != ns || len(task.Blobs) != 3 {
						t.Errorf("%s: task %+v", id, task)
					}
					mu.Lock()
					got[id] = append(got[id], task.Job)
					mu.Unlock()
					time.Sleep(20 * time.Millisecond) // "pulling"
					running.Add(-1)
					reports = append(reports, proto.TaskProgress{Job: task.Job, State: proto.NodeDone, Bytes: 1, Total: 1})
				}
			}
		})
	}
	for deadline := time.Now().Add(10 * time.Second); len(s.Agents()) < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("agents: %v", s.Agents())
		}
	}
	id, err := c.Create(ctx, s.URL(), proto.PreheatRequest{Image: ns + ":v1", Scope: proto.Scope{Kind: proto.ScopeAllAgents}, Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	var j proto.PreheatJob
	for deadline := time.Now().Add(30 * time.Second); !j.Finished(); time.Sleep(10 * time.Millisecond) {
		if j, err = c.Job(ctx, s.URL(), id); err != nil || time.Now().After(deadline) {
			t.Fatalf("job %s: %+v %v", id, j, err)
		}
	}
	cancel()
	wg.Wait()
	if j.State != proto.JobSuccess || len(j.Nodes) != 4 {
		t.Fatalf("job: %+v", j)
	}
	if m := maxRunning.Load(); m != 1 {
		t.Errorf("%d agents ran at once, want 1 (concurrency)", m)
	}
	for i := range 3 {
		if jobs := got[fmt.Sprintf("node-%d", i)]; len(jobs) != 1 || jobs[0] != id {
			t.Errorf("node-%d got tasks %v, want [%s]", i, jobs, id)
		}
	}
	for _, b := range j.Blobs {
		if _, err := e.origin.Store().Stat(b.Digest); err != nil {
			t.Errorf("origin lacks %s: %v", b.Digest, err)
		}
	}
}
