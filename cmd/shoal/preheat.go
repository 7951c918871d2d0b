package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/shoal-dev/shoal/proto"
)

const preheatUsage = `Usage:
  shoal preheat [--buildindex URL] [--token TOKEN] [--scope origins|all|agents=a,b|percent=N]
                [--platform os/arch[/variant]]... [--pin 24h] [--concurrency N] [--wait] REGISTRY/REPO[:TAG|@sha256:...]

Creates a preheat job on the build-index and prints its id; with --wait,
shows each node's progress until the job ends (exit status 1 on FAILURE).
The token may also come from $SHOAL_ADMIN_TOKEN. An https build-index is
verified with --cacert; --cert and --key present a client certificate
(mutual TLS, which the build-index also takes instead of the token).
`

// parseScope reads --scope.
func parseScope(s string) (proto.Scope, error) {
	switch {
	case s == "origins":
		return proto.Scope{Kind: proto.ScopeOrigins}, nil
	case s == "all" || s == "all_agents":
		return proto.Scope{Kind: proto.ScopeAllAgents}, nil
	case strings.HasPrefix(s, "agents="):
		ids := strings.Split(strings.TrimPrefix(s, "agents="), ",")
		if slicesHasEmpty(ids) {
			return proto.Scope{}, fmt.Errorf("--scope %q: want agents=ID[,ID...]", s)
		}
		return proto.Scope{Kind: proto.ScopeAgents, Agents: ids}, nil
	case strings.HasPrefix(s, "percent="):
		n, err := strconv.Atoi(strings.TrimPrefix(s, "percent="))
		if err != nil || n < 1 || n > 100 {
			return proto.Scope{}, fmt.Errorf("--scope %q: want percent=1..100", s)
		}
		return proto.Scope{Kind: proto.ScopePercentage, Percentage: n}, nil
	}
	return proto.Scope{}, fmt.Errorf("--scope %q: want origins, all, agents=a,b or percent=N", s)
}

func slicesHasEmpty(ss []string) bool {
	for _, s := range ss {
		if s == "" {
			return true
		}
	}
	return len(ss) == 0
}

// runPreheat is "shoal preheat": a client of the build-index's jobs API.
func runPreheat(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("preheat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, preheatUsage); fs.PrintDefaults() }
	bi := fs.String("buildindex", "http://127.0.0.1:7620", "the build-index's URL")
	token := fs.String("token", os.Getenv("SHOAL_ADMIN_TOKEN"), "the build-index's admin token")
	scope := fs.String("scope", "origins", "origins, all (every agent), agents=ID,ID or percent=N")
	var platforms stringList
	fs.Var(&platforms, "platform", "os/arch[/variant] to preheat from an index (repeatable; default: every platform)")
	pin := fs.String("pin", "", "keep the blobs out of disk GC this long (e.g. 24h)")
	conc := fs.Int("concurrency", 0, "agents pulling at once (0: the build-index's default)")
	wait := fs.Bool("wait", false, "show progress until the job ends")
	httpClient := clientTLSFlags(fs, "build-index")
	refs, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(refs) != 1 {
		return usageError{fmt.Errorf("want one image reference, got %d\n%s", len(refs), preheatUsage)}
	}
	sc, err := parseScope(*scope)
	if err != nil {
		return usageError{err}
	}
	c := proto.PreheatClient{Token: *token}
	if c.HTTP, err = httpClient(); err != nil {
		return err
	}
	id, err := c.Create(ctx, *bi, proto.PreheatRequest{Image: refs[0], Platforms: platforms, Scope: sc, Pin: *pin, Concurrency: *conc})
	if err != nil {
		return fmt.Errorf("create job: %w", err)
	}
	fmt.Fprintf(stdout, "job %s: %s\n", id, refs[0])
	if !*wait {
		return nil
	}
	start := time.Now()
	prog := newPreheatProgress(stdout)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		j, err := c.Job(ctx, *bi, id)
		if err != nil {
			prog.finish(nil)
			return fmt.Errorf("job %s: %w", id, err)
		}
		prog.update(j)
		if j.Finished() {
			prog.finish(&j)
			fmt.Fprintf(stdout, "job %s: %s in %s (%d blobs, %d nodes)\n", id, j.State, time.Since(start).Round(time.Millisecond), len(j.Blobs), len(j.Nodes))
			if j.State == proto.JobFailure {
				return fmt.Errorf("job %s failed: %s", id, j.Error)
			}
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			prog.finish(nil)
			return ctx.Err()
		}
	}
}

// preheatProgress shows a job's nodes: a bar each on a terminal, a line
// per node state change otherwise.
type preheatProgress struct {
	w     io.Writer
	mu    sync.Mutex
	last  map[string]string // node -> state printed
	bars  *mpb.Progress
	nodes map[string]*mpb.Bar
}

func newPreheatProgress(w io.Writer) *preheatProgress {
	p := &preheatProgress{w: w, last: map[string]string{}, nodes: map[string]*mpb.Bar{}}
	if isTerminal(w) {
		p.bars = mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
	}
	return p
}

func (p *preheatProgress) update(j proto.PreheatJob) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range j.Nodes {
		key := n.Role + " " + n.Node
		if p.bars != nil {
			b := p.nodes[key]
			if b == nil {
				b = p.bars.AddBar(max(n.Total, 1),
					mpb.PrependDecorators(decor.Name(key, decor.WC{C: decor.DindentRight | decor.DextraSpace, W: 28})),
					mpb.AppendDecorators(decor.Counters(decor.SizeB1024(0), "% .1f / % .1f"), decor.Name(" "), decor.Percentage(decor.WC{W: 5})))
				p.nodes[key] = b
			}
			if n.Total > 0 {
				b.SetTotal(n.Total, false)
			}
			b.SetCurrent(n.Bytes)
			switch n.State {
			case proto.NodeDone:
				b.SetTotal(-1, true)
			case proto.NodeError:
				b.Abort(false)
			}
			continue
		}
		if p.last[key] == n.State {
			continue
		}
		p.last[key] = n.State
		line := fmt.Sprintf("%s: %s %d/%d bytes", key, n.State, n.Bytes, n.Total)
		if n.Error != "" {
			line += ": " + n.Error
		}
		fmt.Fprintln(p.w, line)
	}
}

// finish ends the bars (j nil: interrupted).
func (p *preheatProgress) finish(j *proto.PreheatJob) {
	if p.bars == nil {
		return
	}
	p.mu.Lock()
	for _, b := range p.nodes {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	p.mu.Unlock()
	p.bars.Wait()
	if j != nil && j.Error != "" {
		fmt.Fprintln(p.w, "error:", j.Error)
	}
}
