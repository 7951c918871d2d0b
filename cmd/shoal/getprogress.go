package main

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/shoal-dev/shoal/internal/fetch"
)

// getProgress reports a get: bars per blob and in total on a terminal,
// one line per blob and a total otherwise.
type getProgress struct {
	w               io.Writer
	mu              sync.Mutex // serialises plain lines
	blobs, received atomic.Int64
	bytes           atomic.Int64

	bars  *mpb.Progress // nil: plain lines
	total *mpb.Bar
	sum   atomic.Int64 // sizes known so far, the total bar's total
}

func newGetProgress(w io.Writer) *getProgress {
	g := &getProgress{w: w}
	if isTerminal(w) {
		g.bars = mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
		g.total = g.bars.New(0, mpb.BarStyle(), mpb.BarPriority(1<<30),
			mpb.PrependDecorators(decor.Name("total", decor.WC{C: decor.DindentRight | decor.DextraSpace, W: 20})),
			mpb.AppendDecorators(decor.Counters(decor.SizeB1024(0), "% .1f / % .1f"), decor.Name(" "), decor.AverageSpeed(decor.SizeB1024(0), "% .1f")))
	}
	return g
}

func short(d digest.Digest) string {
	if len(d.Encoded()) < 12 {
		return d.String()
	}
	return d.Algorithm().String() + ":" + d.Encoded()[:12]
}

// Blob implements fetch.Progress.
func (g *getProgress) Blob(d digest.Digest, size int64) fetch.BlobProgress {
	b := &blobProgress{g: g, d: d, size: size}
	if g.bars != nil {
		if size > 0 {
			g.total.SetTotal(g.sum.Add(size), false)
		}
		b.bar = g.bars.AddBar(max(size, 0), mpb.BarRemoveOnComplete(),
			mpb.PrependDecorators(decor.Name(short(d), decor.WC{C: decor.DindentRight | decor.DextraSpace, W: 20})),
			mpb.AppendDecorators(decor.Counters(decor.SizeB1024(0), "% .1f / % .1f"), decor.Name(" "), decor.Percentage(decor.WC{W: 5})))
	}
	return b
}

// Note prints a line that is not a blob (the layout's root).
func (g *getProgress) Note(s string) {
	g.line(s)
}

func (g *getProgress) line(s string) {
	if g.bars != nil {
		return // the bars say it; lines would tear them
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	fmt.Fprintln(g.w, s)
}

// Finish ends the bars and prints the total.
func (g *getProgress) Finish(err error, took time.Duration) {
	if g.bars != nil {
		if err != nil {
			g.total.Abort(false)
		} else {
			g.total.SetTotal(-1, true)
		}
		g.bars.Wait() // every bar is complete or aborted by now
	}
	if err != nil {
		return
	}
	n, got := g.blobs.Load(), g.received.Load()
	rate := float64(got) / max(took.Seconds(), 1e-3) / (1 << 20)
	g.mu.Lock()
	defer g.mu.Unlock()
	fmt.Fprintf(g.w, "total: %d blobs, %d bytes, %d bytes received in %s (%.1f MiB/s)\n",
		n, g.bytes.Load(), got, took.Round(time.Millisecond), rate)
}

type blobProgress struct {
	g    *getProgress
	d    digest.Digest
	size int64
	have int64 // bytes on disk at the start
	got  atomic.Int64
	bar  *mpb.Bar
}

func (b *blobProgress) Start(have int64) {
	b.have = have
	if b.bar != nil {
		b.bar.SetCurrent(have)
		b.g.total.IncrInt64(have)
	}
}

func (b *blobProgress) Add(n int) {
	b.got.Add(int64(n))
	b.g.received.Add(int64(n))
	if b.bar != nil {
		b.bar.IncrBy(n)
		b.g.total.IncrBy(n)
	}
}

func (b *blobProgress) Restart() {
	if b.bar != nil {
		b.g.total.IncrInt64(-(b.have + b.got.Load()))
		b.bar.SetCurrent(0)
	}
	b.have = 0
	b.got.Store(0)
}

func (b *blobProgress) Done(state string, err error) {
	if err != nil {
		if b.bar != nil {
			b.bar.Abort(false)
		}
		return
	}
	size := b.have + b.got.Load()
	b.g.blobs.Add(1)
	b.g.bytes.Add(size)
	if b.bar != nil {
		if b.size <= 0 {
			b.g.total.SetTotal(b.g.sum.Add(size), false)
		}
		b.bar.SetTotal(-1, true)
		return
	}
	extra := ""
	if state == fetch.StateResumed {
		extra = fmt.Sprintf(" from byte %d", b.have)
	}
	b.g.line(fmt.Sprintf("%s %d bytes %s%s", b.d, size, state, extra))
}
