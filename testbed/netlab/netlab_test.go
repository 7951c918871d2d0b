package netlab

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// skipUnlessLabs skips, naming what is missing, where no lab can be made.
func skipUnlessLabs(t *testing.T) {
	t.Helper()
	if err := Check(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	probe := "shbprobe" + strings.ReplaceAll(t.Name(), "/", "")
	if len(probe) > 30 {
		probe = probe[:30]
	}
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("skipping: network namespaces not permitted here: %v: %s", err, out)
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
}

// newLab makes a lab or skips, naming what is missing.
func newLab(t *testing.T, o Options) *Lab {
	t.Helper()
	skipUnlessLabs(t)
	l, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("left behind: %v", left)
		}
	})
	return l
}

// connectRTT is the shortest of a few TCP connects from ns to addr (the
// SYN, SYN-ACK round trip).
func connectRTT(t *testing.T, ns, addr string) time.Duration {
	t.Helper()
	best := time.Hour
	dial := DialContext(ns)
	for range 5 {
		t0 := time.Now()
		c, err := dial(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("connect %s from %s: %v", addr, ns, err)
		}
		best = min(best, time.Since(t0))
		c.Close()
	}
	return best
}

// listenIn accepts connections in ns (or the root namespace if ns is "")
// and sends each one n bytes.
func listenIn(t *testing.T, ns, addr string, n int64) net.Listener {
	t.Helper()
	var ln net.Listener
	listen := func() (err error) { ln, err = net.Listen("tcp", addr); return err }
	var err error
	if ns == "" {
		err = listen()
	} else {
		err = InNetns(ns, listen)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.CopyN(c, zeros{}, n)
			}()
		}
	}()
	return ln
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestLabDelayAndRate: the receive delay gives every pair the RTT, tc
// caps a host's download, and Close leaves nothing behind.
func TestLabDelayAndRate(t *testing.T) {
	const rtt = 20 * time.Millisecond
	const rate = 4_000_000
	l := newLab(t, Options{RTT: rtt})
	ctx := context.Background()
	core, err := l.CoreAddr(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	h0, err := l.AddHost(ctx, 0, rate, rate)
	if err != nil {
		t.Fatal(err)
	}
	h1, err := l.AddHost(ctx, 1, rate, rate)
	if err != nil {
		t.Fatal(err)
	}
	const n = 6 << 20
	coreLn := listenIn(t, "", netip.AddrPortFrom(core, 0).String(), n)
	hostLn := listenIn(t, h1.NS, netip.AddrPortFrom(h1.IP, 0).String(), 0)

	// Round trips: host to the root namespace's server, host to host.
	for _, c := range []struct {
		name, addr string
	}{{"host to core", coreLn.Addr().String()}, {"host to host", hostLn.Addr().String()}} {
		got := connectRTT(t, h0.NS, c.addr)
		t.Logf("%s: connect RTT %s (want about %s)", c.name, got, rtt)
		if got < rtt*9/10 {
			t.Errorf("%s: connect RTT %s, want >= %s", c.name, got, rtt*9/10)
		}
	}

	// Rate: the core sends n bytes to host 0; its download cap holds.
	conn, err := DialContext(h0.NS)(ctx, "tcp", coreLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t0 := time.Now()
	got, err := io.Copy(io.Discard, conn)
	secs := time.Since(t0).Seconds()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("received %d bytes, want %d", got, n)
	}
	bps := float64(got) / secs
	t.Logf("download: %d bytes in %.2f s = %.2f MB/s (cap %.2f MB/s)", got, secs, bps/1e6, rate/1e6)
	// The bucket's first burst and the queue let a little more through.
	if bps > rate*1.1 {
		t.Errorf("download at %.2f MB/s, over the %.2f MB/s cap", bps/1e6, rate/1e6)
	}
	if err := l.DelayErr(); err != nil {
		t.Errorf("delay line: %v", err)
	}
	if l.DelayedPackets() == 0 {
		t.Error("no packet went through a delay line")
	}
}
