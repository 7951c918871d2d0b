package wire_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	pp "github.com/anacrolix/torrent/peer_protocol"

	"github.com/shoal-dev/shoal/internal/p2p/wire"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func pipePair(t *testing.T) (a, b net.Conn) {
	a, b = net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// pairs are the two loops' connections: a socket (the raw loop) and a
// pipe (the plain one).
var pairs = []struct {
	name string
	open func(*testing.T) (net.Conn, net.Conn)
}{{"tcp", tcpPair}, {"pipe", pipePair}}

func frame(body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)
}

// TestReadMessagesFrames sends messages of every size the engines use, and
// some they do not, in pieces of every size, and checks each comes out
// whole and in order, on a socket (the raw loop) and on a pipe (the plain
// one).
func TestReadMessagesFrames(t *testing.T) {
	var bodies [][]byte
	for _, n := range []int{0, 1, 5, 13, 100, 4 << 10, 9 + 32<<10, 9 + 128<<10, 300 << 10, 0, 5} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		bodies = append(bodies, b)
	}
	var stream []byte
	for _, b := range bodies {
		stream = append(stream, frame(b)...)
	}
	for _, pair := range pairs {
		for _, chunk := range []int{1, 3, 1000, 64 << 10, len(stream)} {
			t.Run(pair.name+"/"+strconv.Itoa(chunk), func(t *testing.T) {
				w, r := pair.open(t)
				go func() {
					for off := 0; off < len(stream); off += chunk {
						if _, err := w.Write(stream[off:min(off+chunk, len(stream))]); err != nil {
							return
						}
					}
					w.Close()
				}()
				var got [][]byte
				err := wire.ReadMessages(r, wire.Options{Buffer: 132 << 10, MaxLength: 1 << 20}, func(b []byte) error {
					got = append(got, bytes.Clone(b))
					return nil
				})
				if !errors.Is(err, io.EOF) {
					t.Fatalf("ended with %v, want EOF", err)
				}
				if len(got) != len(bodies) {
					t.Fatalf("%d messages, want %d", len(got), len(bodies))
				}
				for i := range bodies {
					if !bytes.Equal(got[i], bodies[i]) {
						t.Fatalf("message %d (%d bytes) differs: got %d bytes", i, len(bodies[i]), len(got[i]))
					}
				}
			})
		}
	}
}

func TestReadMessagesErrors(t *testing.T) {
	opts := wire.Options{Buffer: 1 << 10, MaxLength: 64 << 10}
	cases := []struct {
		name string
		send []byte
		want string
	}{
		{"too long", binary.BigEndian.AppendUint32(nil, 64<<10+1), "longer than"},
		{"cut in the body", append(frame(make([]byte, 10)), frame(make([]byte, 100))[:50]...), io.ErrUnexpectedEOF.Error()},
		{"cut in the prefix", []byte{0, 0}, io.ErrUnexpectedEOF.Error()},
	}
	for _, c := range cases {
		for _, pair := range pairs {
			t.Run(c.name+"/"+pair.name, func(t *testing.T) {
				w, r := pair.open(t)
				go func() {
					w.Write(c.send)
					w.Close()
				}()
				err := wire.ReadMessages(r, opts, func([]byte) error { return nil })
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("got %v, want an error with %q", err, c.want)
				}
			})
		}
	}
	t.Run("handler's error", func(t *testing.T) {
		w, r := tcpPair(t)
		go w.Write(append(frame([]byte{1}), frame([]byte{2})...))
		stop := errors.New("stop")
		n := 0
		err := wire.ReadMessages(r, opts, func([]byte) error { n++; return stop })
		if err != stop || n != 1 {
			t.Fatalf("got %v after %d messages, want the handler's error after 1", err, n)
		}
	})
}

// TestReadMessagesIdle: a peer that sends nothing for Idle is dropped, on
// either loop; one that keeps sending is not.
func TestReadMessagesIdle(t *testing.T) {
	for _, pair := range pairs {
		t.Run(pair.name, func(t *testing.T) {
			w, r := pair.open(t)
			go func() {
				for range 6 { // 300 ms of keep-alives, then silence
					if _, err := w.Write(frame(nil)); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
			start := time.Now()
			n := 0
			err := wire.ReadMessages(r, wire.Options{Buffer: 1 << 10, MaxLength: 1 << 10, Idle: 150 * time.Millisecond},
				func([]byte) error { n++; return nil })
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("got %v, want a deadline error", err)
			}
			if n != 6 {
				t.Fatalf("%d keep-alives before the deadline, want 6", n)
			}
			if d := time.Since(start); d < 400*time.Millisecond {
				t.Fatalf("dropped after %v: within the keep-alives", d)
			}
		})
	}
}

// TestReadMessagesOneReadAMessage is the point of the package: messages
// that arrive one at a time cost one read each, not a read and another
// that finds the socket empty.
func TestReadMessagesOneReadAMessage(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the raw loop (recvmsg with TCP_INQ) is Linux's")
	}
	w, r := tcpPair(t)
	const n = 300
	handled := make(chan struct{})
	done := make(chan error, 1)
	all0, empty0 := wire.Recvmsgs()
	go func() {
		done <- wire.ReadMessages(r, wire.Options{Buffer: 4 << 10, MaxLength: 1 << 10}, func([]byte) error {
			handled <- struct{}{}
			return nil
		})
	}()
	msg := frame([]byte{byte(pp.Have), 0, 0, 0, 7})
	for i := range n {
		if _, err := w.Write(msg); err != nil {
			t.Fatal(err)
		}
		select {
		case <-handled:
		case err := <-done:
			t.Fatalf("reader ended after %d messages: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("message %d not handled in 10 s", i)
		}
		// Let the reader get back to its wait before the next message
		// comes, as it does between a swarm's messages.
		time.Sleep(200 * time.Microsecond)
	}
	w.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("ended with %v, want EOF", err)
	}
	all, empty := wire.Recvmsgs()
	all, empty = all-all0, empty-empty0
	t.Logf("%d reads (%d empty) for %d messages and the end", all, empty, n)
	if all < n+1 || all > n+n/10 || empty > n/10 {
		t.Fatalf("%d reads, %d of them empty, for %d messages and the end: want about one each, none empty", all, empty, n)
	}
}

// TestReadMessagesSeesTheEndItWasNotWokenFor: a message and the end of the
// connection that came before the reader looked (one wake-up for both)
// must not leave it waiting. A FIN is reported by TCP_INQ, so the reader
// sees it at once; a reset is not, and the probe finds it within
// Options.Probe.
func TestReadMessagesSeesTheEndItWasNotWokenFor(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the raw loop (recvmsg with TCP_INQ) is Linux's")
	}
	for _, c := range []struct {
		name   string
		reset  bool
		within time.Duration
	}{{"fin", false, 300 * time.Millisecond}, {"reset", true, 1500 * time.Millisecond}} {
		t.Run(c.name, func(t *testing.T) {
			w, r := tcpPair(t)
			if c.reset {
				// Unread data at close, and no linger: the close resets.
				if _, err := r.Write([]byte("unread")); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
				w.(*net.TCPConn).SetLinger(0)
			}
			if _, err := w.Write(frame([]byte{byte(pp.Have), 0, 0, 0, 1})); err != nil {
				t.Fatal(err)
			}
			w.Close()
			time.Sleep(100 * time.Millisecond) // both are in r's socket before it reads
			start := time.Now()
			done := make(chan error, 1)
			n := 0
			go func() {
				done <- wire.ReadMessages(r, wire.Options{Buffer: 4 << 10, MaxLength: 1 << 10, Probe: 500 * time.Millisecond}, func([]byte) error { n++; return nil })
			}()
			select {
			case err := <-done:
				if n != 1 {
					t.Fatalf("%d messages, want 1", n)
				}
				if c.reset && !errors.Is(err, syscall.ECONNRESET) || !c.reset && !errors.Is(err, io.EOF) {
					t.Fatalf("ended with %v", err)
				}
				if d := time.Since(start); d > c.within {
					t.Fatalf("ended after %v, want within %v", d, c.within)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the reader still waits 5 s after the connection ended")
			}
		})
	}
}

// TestReaderProbesAnIdleConnectionAtItsInterval: a reader that waits
// without a last empty read (the probe's case) reads once per
// Options.Probe while nothing comes, and not more often: each probe is a
// timer, a wake-up and a read, on every idle connection of a swarm.
func TestReaderProbesAnIdleConnectionAtItsInterval(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the raw loop (recvmsg with TCP_INQ) is Linux's")
	}
	const idle = 2 * time.Second
	for _, c := range []struct {
		name     string
		probe    time.Duration
		min, max int64 // empty reads while idle
	}{{"500ms", 500 * time.Millisecond, 1, 5}, {"default", 0, 0, 0}} {
		t.Run(c.name, func(t *testing.T) {
			w, r := tcpPair(t)
			handled := make(chan struct{}, 1)
			done := make(chan error, 1)
			go func() {
				done <- wire.ReadMessages(r, wire.Options{Buffer: 4 << 10, MaxLength: 1 << 10, Probe: c.probe}, func([]byte) error {
					handled <- struct{}{}
					return nil
				})
			}()
			if _, err := w.Write(frame([]byte{byte(pp.Have), 0, 0, 0, 7})); err != nil {
				t.Fatal(err)
			}
			select {
			case <-handled:
			case <-time.After(10 * time.Second):
				t.Fatal("message not handled in 10 s")
			}
			_, empty0 := wire.Recvmsgs()
			time.Sleep(idle)
			_, empty := wire.Recvmsgs()
			if n := empty - empty0; n < c.min || n > c.max {
				t.Fatalf("%d empty reads in %v idle with a probe of %v, want %d-%d", n, idle, c.probe, c.min, c.max)
			}
			w.Close()
			if err := <-done; !errors.Is(err, io.EOF) {
				t.Fatalf("ended with %v, want EOF", err)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	block := bytes.Repeat([]byte{0xab}, 1000)
	msgs := []pp.Message{
		{Type: pp.Choke}, {Type: pp.Unchoke}, {Type: pp.Interested}, {Type: pp.NotInterested},
		{Type: pp.Have, Index: 70000},
		{Type: pp.Request, Index: 3, Begin: 1 << 17, Length: 1 << 17},
		{Type: pp.Cancel, Index: 4, Begin: 0, Length: 32 << 10},
		{Type: pp.Piece, Index: 5, Begin: 1 << 17, Piece: block},
		{Type: pp.Bitfield, Bitfield: []bool{true, false, false, true, true, false, false, false, true, false, false, false, false, false, false, true}},
		{Type: pp.Extended, ExtendedID: pp.HandshakeExtendedID, ExtendedPayload: []byte("d1:md1:xi5ee8:shoal_upi1000000ee")},
		{Type: pp.Extended, ExtendedID: 3, ExtendedPayload: []byte{}},
	}
	for _, m := range msgs {
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := wire.Decode(b[4:])
		if err != nil {
			t.Fatalf("%v: %v", m.Type, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(m) {
			t.Fatalf("decoded %+v, want %+v", got, m)
		}
		var lib pp.Message // the library's decoder agrees
		dec := pp.Decoder{R: bufio.NewReader(bytes.NewReader(b)), MaxLength: 1 << 20}
		if err := dec.Decode(&lib); err != nil || fmt.Sprint(lib) != fmt.Sprint(got) {
			t.Fatalf("the library decodes %+v (%v), we %+v", lib, err, got)
		}
	}
	for _, bad := range [][]byte{
		{byte(pp.Have), 0, 0, 0},
		{byte(pp.Request), 0, 0, 0, 1, 0, 0, 0, 2},
		{byte(pp.Piece), 0, 0, 0, 1},
		{byte(pp.Choke), 1},
		{byte(pp.Extended)},
		{99},
	} {
		if m, err := wire.Decode(bad); err == nil {
			t.Fatalf("decoded % x as %+v, want an error", bad, m)
		}
	}
}
