package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/shoal-dev/shoal/config"
)

// The bench's clients pull in a process of their own, as containerd pulls
// from an agent: their reads, HTTP parsing and checks are the client's
// CPU, not the swarm's, and on loopback a reader in the swarm's process
// is charged most of each copy's receive path (a sendfile of 1 GiB to a
// reader in the process cost 0.36 core-s here, to one outside it 0.07).
// The harness starts its own executable again with clientsEnv set; this
// package's init then serves pulls on stdin and stdout instead of running
// the program (the shoal binary and the test binaries alike).
const clientsEnv = "SHOAL_BENCH_CLIENTS"

func init() {
	if os.Getenv(clientsEnv) == "1" {
		os.Exit(serveClients(os.Stdin, os.Stdout))
	}
}

// clientOrder is one line the harness writes to the client process: pull
// (URL, checked against Size and CRC, at most Rate bytes a second if > 0),
// cancel the pull ID, or dump the process's goroutines to Path.
type clientOrder struct {
	Op   string  `json:"op"`
	ID   int     `json:"id"`
	URL  string  `json:"url,omitempty"`
	Size int64   `json:"size,omitempty"`
	CRC  uint32  `json:"crc,omitempty"`
	Rate float64 `json:"rate,omitempty"`
	Path string  `json:"path,omitempty"`
}

// clientReply is the client process's line for a pull's first byte
// (First; the harness times stalls itself, so a client process that
// stalls is caught too) and for its end.
type clientReply struct {
	ID      int     `json:"id"`
	Seconds float64 `json:"seconds"`
	TTFB    float64 `json:"ttfb"`
	Error   string  `json:"error,omitempty"`
	First   bool    `json:"first,omitempty"`
}

// serveClients runs the client process: a pull a goroutine, a reply a
// line. The end of its input cancels what still runs and ends it.
func serveClients(in io.Reader, out io.Writer) int {
	ctx, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	var (
		mu      sync.Mutex // out and cancels
		cancels = map[int]context.CancelFunc{}
		wg      sync.WaitGroup
	)
	enc := json.NewEncoder(out)
	dec := json.NewDecoder(bufio.NewReader(in))
	for {
		var o clientOrder
		if err := dec.Decode(&o); err != nil {
			if !errors.Is(err, io.EOF) {
				fmt.Fprintf(os.Stderr, "bench clients: %v\n", err)
			}
			break
		}
		switch o.Op {
		case "pull":
			pctx, cancel := context.WithCancel(ctx)
			mu.Lock()
			cancels[o.ID] = cancel
			mu.Unlock()
			first := func() {
				mu.Lock()
				defer mu.Unlock()
				if err := enc.Encode(clientReply{ID: o.ID, First: true}); err != nil {
					fmt.Fprintf(os.Stderr, "bench clients: %v\n", err)
				}
			}
			wg.Go(func() {
				secs, ttfb, err := pullOne(pctx, o.URL, copyCheck{size: o.Size, crc: o.CRC}, config.Rate(o.Rate), first)
				r := clientReply{ID: o.ID, Seconds: secs, TTFB: ttfb}
				if err != nil {
					r.Error = err.Error()
				}
				mu.Lock()
				defer mu.Unlock()
				cancel()
				delete(cancels, o.ID)
				if err := enc.Encode(r); err != nil {
					fmt.Fprintf(os.Stderr, "bench clients: %v\n", err)
				}
			})
		case "dump":
			if err := dumpGoroutines(o.Path); err != nil {
				fmt.Fprintf(os.Stderr, "bench clients: %v\n", err)
			}
		case "cancel":
			mu.Lock()
			if cancel := cancels[o.ID]; cancel != nil {
				cancel()
			}
			mu.Unlock()
		default:
			fmt.Fprintf(os.Stderr, "bench clients: unknown op %q\n", o.Op)
		}
	}
	cancelAll()
	wg.Wait()
	return 0
}

// clientProcess is the harness's end of a client process.
type clientProcess struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{} // closed when the replies end

	// stallAfter, if > 0, is how long a pull may go without a byte before
	// onStall is called with its ID (from a goroutine of its own).
	stallAfter time.Duration
	onStall    func(id int)

	mu      sync.Mutex // enc, next, waiting, first, err
	enc     *json.Encoder
	next    int
	waiting map[int]chan clientReply
	first   map[int]bool // pulls whose first byte came
	err     error        // why the replies ended early
}

// startClients starts a client process (this executable again), its
// stderr (its errors, and a goroutine dump if it gets SIGQUIT) to stderr.
func startClients(ctx context.Context, stderr io.Writer) (*clientProcess, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("bench: client process: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), clientsEnv+"=1")
	cmd.Stderr = stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: client process: %w", err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("bench: client process: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: client process: %w", err)
	}
	p := &clientProcess{cmd: cmd, in: in, done: make(chan struct{}), enc: json.NewEncoder(in), waiting: map[int]chan clientReply{}, first: map[int]bool{}}
	go p.replies(out)
	return p, nil
}

func (p *clientProcess) replies(out io.Reader) {
	defer close(p.done)
	dec := json.NewDecoder(bufio.NewReader(out))
	for {
		var r clientReply
		err := dec.Decode(&r)
		p.mu.Lock()
		if err != nil {
			if p.err == nil {
				p.err = fmt.Errorf("bench: client process: replies ended: %w", err)
			}
			p.mu.Unlock()
			return
		}
		if r.First {
			p.first[r.ID] = true
			p.mu.Unlock()
			continue
		}
		ch := p.waiting[r.ID]
		delete(p.waiting, r.ID)
		delete(p.first, r.ID)
		p.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// pull is pullOne in the client process: it returns when the pull ends,
// and cancelling ctx cancels the pull there.
func (p *clientProcess) pull(ctx context.Context, url string, want copyCheck, rate config.Rate) (secs, ttfb float64, err error) {
	ch := make(chan clientReply, 1)
	p.mu.Lock()
	id := p.next
	p.next++
	p.waiting[id] = ch
	if p.err == nil {
		p.err = p.enc.Encode(clientOrder{Op: "pull", ID: id, URL: url, Size: want.size, CRC: want.crc, Rate: float64(rate)})
	}
	err = p.err
	p.mu.Unlock()
	if err != nil {
		return 0, 0, err
	}
	if p.stallAfter > 0 && p.onStall != nil {
		stall := time.AfterFunc(p.stallAfter, func() {
			p.mu.Lock()
			_, running := p.waiting[id]
			stalled := running && !p.first[id]
			p.mu.Unlock()
			if stalled {
				p.onStall(id)
			}
		})
		defer stall.Stop()
	}
	cancelled := false
	for {
		select {
		case r := <-ch:
			if r.Error != "" {
				return r.Seconds, r.TTFB, errors.New(r.Error)
			}
			return r.Seconds, r.TTFB, nil
		case <-p.done:
			p.mu.Lock()
			err := p.err
			p.mu.Unlock()
			return 0, 0, err
		case <-ctx.Done():
			if !cancelled {
				cancelled = true
				p.mu.Lock()
				if p.err == nil {
					p.err = p.enc.Encode(clientOrder{Op: "cancel", ID: id})
				}
				p.mu.Unlock()
			}
			ctx = context.Background() // wait for the pull's own end
		}
	}
}

// dump has the client process write its goroutines to path (asynchronously:
// the file appears when the process gets to it).
func (p *clientProcess) dump(path string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	return p.enc.Encode(clientOrder{Op: "dump", Path: path})
}

// close ends the client process once its pulls are done and returns the
// CPU time it used.
func (p *clientProcess) close() (cpuSeconds float64, err error) {
	p.in.Close()
	<-p.done
	if err := p.cmd.Wait(); err != nil {
		return 0, fmt.Errorf("bench: client process: %w", err)
	}
	s := p.cmd.ProcessState
	return (s.UserTime() + s.SystemTime()).Seconds(), nil
}
