package wire

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// readRaw runs the connection inside RawConn.Read (see the package
// comment), reading with recvmsg and TCP_INQ, so that each read also says
// whether the socket still holds anything (bytes, or a FIN). It returns
// errNotRaw if conn is not a TCP socket that supports TCP_INQ (Linux 4.18
// and later).
func (rd *reader) readRaw() error {
	sc, ok := rd.conn.(syscall.Conn)
	if !ok {
		return errNotRaw
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return errNotRaw
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_TCP, unix.TCP_INQ, 1)
	}); err != nil || serr != nil {
		return errNotRaw
	}
	var (
		iov      unix.Iovec
		oob      [unix.SizeofCmsghdr + 8]byte
		msg      = unix.Msghdr{Iov: &iov, Control: &oob[0]}
		rerr     error
		lastData = time.Now()
		deadline time.Time // the read deadline set, zero if none
	)
	msg.SetIovlen(1)
	// arm sets the read deadline for a wait that skipped the empty read:
	// the probe, or the idle limit if that comes first. It re-arms only
	// when the deadline set is more than half a probe early, so that most
	// waits cost no timer change.
	arm := func(now time.Time) {
		d := now.Add(rd.probe)
		if idle := lastData.Add(rd.idle); rd.idle > 0 && idle.Before(d) {
			d = idle
		}
		if deadline.IsZero() || d.Sub(deadline) > rd.probe/2 || d.Before(deadline) {
			_ = rd.conn.SetReadDeadline(d)
			deadline = d
		}
	}
	read := func(fd uintptr) bool {
		got := false // bytes came in this call
		for {
			room := len(rd.buf) - rd.w
			iov.Base = &rd.buf[rd.w]
			iov.SetLen(room)
			msg.SetControllen(len(oob))
			r, _, errno := syscall.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), 0)
			n := int(r)
			recvmsgs.Add(1)
			switch {
			case errno == syscall.EINTR:
				continue
			case errno == syscall.EAGAIN:
				emptyRecvmsgs.Add(1)
				if rd.idle > 0 {
					now := time.Now()
					if got {
						lastData = now
					}
					arm(now)
				}
				return false // an empty read: the next event wakes us
			case errno != 0:
				rerr = os.NewSyscallError("recvmsg", errno)
				return true
			case n == 0:
				rerr = rd.end(io.EOF)
				return true
			}
			rd.w += n
			got = true
			inq := 1 // unknown: read again
			if msg.Controllen >= unix.SizeofCmsghdr+4 {
				h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
				if h.Level == unix.SOL_TCP && h.Type == unix.TCP_CM_INQ {
					inq = int(*(*int32)(unsafe.Pointer(&oob[unix.SizeofCmsghdr])))
				}
			}
			if rerr = rd.frames(); rerr != nil {
				return true
			}
			if inq == 0 && n < room {
				// Nothing left to read: wait, without the read that would
				// find nothing. Data that comes meanwhile marks the
				// descriptor ready, and the wait returns at once.
				now := time.Now()
				lastData = now
				arm(now)
				return false
			}
		}
	}
	for {
		err := raw.Read(read)
		if rerr != nil {
			return rerr
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		now := time.Now()
		if rd.idle > 0 && now.Sub(lastData) >= rd.idle {
			return err
		}
		deadline = time.Time{}
		arm(now) // and read again: a probe, or a wait that must go on
	}
}
