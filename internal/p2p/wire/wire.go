// Package wire reads BitTorrent peer-wire messages off a connection.
//
// A net.Conn's Read tries the socket before it waits on the poller, so a
// reader that has just emptied the socket pays one more read, which finds
// nothing, before every wait. In a swarm under a cap most messages arrive
// alone (a request, a Have, a block), and those empty reads were 45 % of
// an agent's reads. ReadMessages stays inside one RawConn.Read for the
// connection's life and, after a read that left the socket empty (on
// Linux's TCP, recvmsg with TCP_INQ says so: no bytes and no FIN left),
// waits before it reads again. That is safe only inside one
// RawConn.Read: each call starts by clearing the poller's readiness, so a
// call that waited first could miss data that arrived since the last
// read, and wait for good. Other connections take a plain read loop.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"
)

// Options bound what ReadMessages reads.
type Options struct {
	// Buffer is the size of the read buffer: a block message and its
	// header should fit, so that a block takes one read.
	Buffer int
	// MaxLength is the longest message accepted (its length prefix);
	// longer ones end the connection. A message longer than Buffer is read
	// into a buffer of its own.
	MaxLength int
	// Idle, when set, ends the connection once no byte has come for that
	// long (os.ErrDeadlineExceeded).
	Idle time.Duration
	// Probe bounds how long a reader that waited without a last empty
	// read can miss the end of its connection (0: DefaultProbe). TCP_INQ
	// reports a FIN still to be read, but not a reset: a peer that sends a
	// message and then resets (it closed with our data unread, or its
	// process died) can have both taken by one wake-up, and the reader,
	// told the socket is empty, would wait for an event that never comes.
	// At most every Probe it reads once more, which finds the reset.
	Probe time.Duration
}

// DefaultProbe is Options.Probe's default. Each probe of a connection
// idle that long is a timer, a wake-up and a read that finds nothing:
// once a second, N = 256 at 0.125 MB/s made 36k of them per GiB
// delivered, 16 % of its reads. A reset missed meanwhile costs little: the
// next write to the peer fails and ends the connection, and requests it
// sits on move to other peers after their stall time.
const DefaultProbe = 5 * time.Second

// ReadMessages reads length-prefixed messages from conn until it fails or
// handle returns an error, and returns that error (io.EOF for a clean end
// between messages). handle gets each message's body: its type byte and
// payload, empty for a keep-alive. The body is conn's read buffer: it is
// valid only until handle returns.
//
// handle runs while conn's read side is held, and a Close of conn waits
// for it to return: a goroutine that closes conn must not hold what
// handle waits for (close it from another goroutine).
func ReadMessages(conn net.Conn, o Options, handle func(body []byte) error) error {
	if o.Buffer < 64 {
		o.Buffer = 64
	}
	if o.Probe <= 0 {
		o.Probe = DefaultProbe
	}
	rd := &reader{conn: conn, small: make([]byte, o.Buffer), max: o.MaxLength, idle: o.Idle, probe: o.Probe, handle: handle}
	rd.buf = rd.small
	if err := rd.readRaw(); !errors.Is(err, errNotRaw) {
		return err
	}
	return rd.readPlain()
}

var errNotRaw = errors.New("wire: not a raw connection")

var recvmsgs, emptyRecvmsgs atomic.Int64

// Recvmsgs is how many recvmsg system calls ReadMessages has made in this
// process, and how many of them found the socket empty. /proc/self/io's
// syscr, which counts read(2), does not count them.
func Recvmsgs() (all, empty int64) { return recvmsgs.Load(), emptyRecvmsgs.Load() }

type reader struct {
	conn   net.Conn
	small  []byte // the usual buffer
	buf    []byte // small, or one that fits a longer message
	r, w   int    // buf[r:w] is read and not yet handled
	max    int
	idle   time.Duration
	probe  time.Duration
	handle func([]byte) error
}

// frames hands each whole message in buf[r:w] to handle, then makes sure
// the next read has room for the rest of a partial one.
func (rd *reader) frames() error {
	for rd.w-rd.r >= 4 {
		n := binary.BigEndian.Uint32(rd.buf[rd.r:])
		if int64(n) > int64(rd.max) {
			return fmt.Errorf("wire: message of %d bytes, longer than %d", n, rd.max)
		}
		end := rd.r + 4 + int(n)
		if end > rd.w {
			rd.room(4 + int(n))
			return nil
		}
		body := rd.buf[rd.r+4 : end]
		rd.r = end
		if err := rd.handle(body); err != nil {
			return err
		}
	}
	rd.room(4)
	return nil
}

// minRoom is the least room a read gets: compacting a partial message
// costs less than a read that fills a sliver and another after it.
const minRoom = 4 << 10

// room arranges for a message of need bytes (with its prefix), partly
// read at buf[r:w], to fit between r and the buffer's end.
func (rd *reader) room(need int) {
	if rd.r == rd.w {
		rd.r, rd.w = 0, 0
		if len(rd.buf) != len(rd.small) {
			rd.buf = rd.small // back from a long message
		}
	}
	if need > len(rd.buf) {
		b := make([]byte, need)
		rd.w = copy(b, rd.buf[rd.r:rd.w])
		rd.r, rd.buf = 0, b
		return
	}
	if rd.r > 0 && (rd.r+need > len(rd.buf) || len(rd.buf)-rd.w < min(minRoom, len(rd.buf)/2)) {
		rd.w = copy(rd.buf, rd.buf[rd.r:rd.w])
		rd.r = 0
	}
}

// readPlain is the loop for connections without a file descriptor (a
// net.Pipe, a wrapped stream): read, hand off, repeat.
func (rd *reader) readPlain() error {
	for {
		if rd.idle > 0 {
			_ = rd.conn.SetReadDeadline(time.Now().Add(rd.idle))
		}
		n, err := rd.conn.Read(rd.buf[rd.w:])
		if n > 0 {
			rd.w += n
			if err := rd.frames(); err != nil {
				return err
			}
		}
		if err != nil {
			return rd.end(err)
		}
	}
}

// end is the error for a connection that stopped at err: io.EOF only
// between messages.
func (rd *reader) end(err error) error {
	if errors.Is(err, io.EOF) && rd.w > rd.r {
		return io.ErrUnexpectedEOF
	}
	return err
}
