package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A delay line holds every packet of one netfilter queue in the kernel for
// a fixed time, then lets it go. This kernel has no netem (the usual tool),
// but it has NFQUEUE: the packet stays in the kernel, only its id comes up
// over netlink, and one batch verdict releases every packet up to an id.
// Packets leave in order, after the delay, with TCP's own segments, windows
// and ACKs untouched end to end.

// Netlink constants of nfnetlink_queue (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue      = 3
	nfqnlMsgPacket       = 0
	nfqnlMsgConfig       = 2
	nfqnlMsgVerdictBatch = 3
	nfqaPacketHdr        = 1
	nfqaVerdictHdr       = 2
	nfqaCfgCmd           = 1
	nfqaCfgParams        = 2
	nfqaCfgQueueMaxlen   = 3
	nfqaCfgMask          = 4
	nfqaCfgFlags         = 5
	nfqnlCfgCmdBind      = 1
	nfqnlCopyMeta        = 1
	nfqaCfgFFailOpen     = 1
	nfqaCfgFGSO          = 4
	nfAccept             = 1
	netlinkNoENOBUFS     = 5
)

// delayLine is one bound queue and its release loop.
type delayLine struct {
	fd    int
	queue uint16
	delay time.Duration

	mu      sync.Mutex
	pending []held // arrival order = id order
	wake    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	errMu   sync.Mutex
	err     error
	packets int64
}

type held struct {
	id uint32
	at time.Time
}

// openDelayLine binds queue in the network namespace of the calling thread
// (the socket stays there) and starts releasing its packets after delay.
func openDelayLine(queue uint16, delay time.Duration) (*delayLine, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nfqueue: netlink socket: %w", err)
	}
	d := &delayLine{fd: fd, queue: queue, delay: delay, wake: make(chan struct{}, 1), done: make(chan struct{})}
	if err := d.setup(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	d.wg.Go(d.read)
	d.wg.Go(d.release)
	return d, nil
}

func (d *delayLine) setup() error {
	if err := unix.Bind(d.fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("nfqueue: bind netlink: %w", err)
	}
	// A burst of packet notices must not overflow the socket; if one is
	// lost anyway, the next batch verdict releases its packet too.
	_ = unix.SetsockoptInt(d.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	_ = unix.SetsockoptInt(d.fd, unix.SOL_NETLINK, netlinkNoENOBUFS, 1)
	// Receives time out so that Close is noticed.
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(d.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fmt.Errorf("nfqueue: receive timeout: %w", err)
	}
	steps := []struct {
		what  string
		attrs []byte
	}{
		{"bind queue", attr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0})},
		// Metadata only: the payload stays in the kernel.
		{"copy mode", attr(nfqaCfgParams, []byte{0, 0, 0, 0, nfqnlCopyMeta})},
		{"queue length", attr(nfqaCfgQueueMaxlen, be32(1<<16))},
		// GSO: a 64 KiB segment is one packet, as netem would see it.
		// Fail open: a full queue passes packets instead of dropping them.
		{"flags", append(attr(nfqaCfgMask, be32(nfqaCfgFGSO|nfqaCfgFFailOpen)), attr(nfqaCfgFlags, be32(nfqaCfgFGSO|nfqaCfgFFailOpen))...)},
	}
	for i, s := range steps {
		if err := d.request(nfqnlMsgConfig, uint32(i+1), s.attrs); err != nil {
			return fmt.Errorf("nfqueue %d: %s: %w", d.queue, s.what, err)
		}
	}
	return nil
}

// request sends one config message and waits for its ack.
func (d *delayLine) request(msg uint8, seq uint32, attrs []byte) error {
	if err := unix.Sendto(d.fd, message(msg, unix.NLM_F_REQUEST|unix.NLM_F_ACK, seq, d.queue, attrs), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(d.fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && m.Header.Seq == seq {
				if len(m.Data) < 4 {
					return errors.New("short netlink error")
				}
				if code := int32(binary.NativeEndian.Uint32(m.Data)); code != 0 {
					return syscall.Errno(-code)
				}
				return nil
			}
		}
	}
}

// read collects the ids of queued packets with their arrival time.
func (d *delayLine) read() {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(d.fd, buf, 0)
		select {
		case <-d.done:
			return
		default:
		}
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
				continue
			}
			d.fail(fmt.Errorf("nfqueue %d: receive: %w", d.queue, err))
			return
		}
		now := time.Now()
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			continue
		}
		var got []held
		for _, m := range msgs {
			if m.Header.Type != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(m.Data) < 4 {
				continue
			}
			if id, ok := packetID(m.Data[4:]); ok {
				got = append(got, held{id: id, at: now})
			}
		}
		if len(got) == 0 {
			continue
		}
		d.mu.Lock()
		d.pending = append(d.pending, got...)
		d.packets += int64(len(got))
		d.mu.Unlock()
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// release lets packets go once they are due, with one batch verdict for
// all that are. It sleeps with nanosleep on its own thread: the runtime's
// timers round short sleeps up to a millisecond, a whole RTT at 2 ms.
func (d *delayLine) release() {
	for {
		d.mu.Lock()
		var next time.Time
		if len(d.pending) > 0 {
			next = d.pending[0].at.Add(d.delay)
		}
		d.mu.Unlock()
		if next.IsZero() {
			select {
			case <-d.done:
				return
			case <-d.wake:
				continue
			}
		}
		if wait := time.Until(next); wait > 0 {
			ts := unix.NsecToTimespec(int64(wait))
			_ = unix.Nanosleep(&ts, nil)
		}
		now := time.Now()
		d.mu.Lock()
		k := 0
		for k < len(d.pending) && !d.pending[k].at.Add(d.delay).After(now) {
			k++
		}
		var last uint32
		if k > 0 {
			last = d.pending[k-1].id
			d.pending = append(d.pending[:0], d.pending[k:]...)
		}
		d.mu.Unlock()
		if k == 0 {
			continue
		}
		vh := append(be32(nfAccept), be32(last)...)
		if err := unix.Sendto(d.fd, message(nfqnlMsgVerdictBatch, unix.NLM_F_REQUEST, 0, d.queue, attr(nfqaVerdictHdr, vh)), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			select {
			case <-d.done:
				return
			default:
			}
			d.fail(fmt.Errorf("nfqueue %d: verdict: %w", d.queue, err))
		}
	}
}

func (d *delayLine) fail(err error) {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	if d.err == nil {
		d.err = err
	}
}

// Err is the first error the line met (nil while it works).
func (d *delayLine) Err() error {
	d.errMu.Lock()
	defer d.errMu.Unlock()
	return d.err
}

// Packets is how many packets went through the line.
func (d *delayLine) Packets() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.packets
}

// Close stops the loops and closes the socket; the kernel then drops the
// queue's binding (the iptables rule's --queue-bypass lets packets through unqueued).
func (d *delayLine) Close() {
	close(d.done)
	select {
	case d.wake <- struct{}{}:
	default:
	}
	d.wg.Wait()
	unix.Close(d.fd)
}

// packetID finds NFQA_PACKET_HDR's packet id in a packet notice's attributes.
func packetID(b []byte) (uint32, bool) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (1<<15 | 1<<14) // nested and byte-order flags
		if l < 4 || l > len(b) {
			return 0, false
		}
		if typ == nfqaPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(b[4:]), true
		}
		b = b[min(len(b), (l+3)&^3):]
	}
	return 0, false
}

// message is a netlink message of the queue subsystem: the header, the
// nfgenmsg (family unspecified, version 0, the queue number) and attrs.
func message(msg uint8, flags uint16, seq uint32, queue uint16, attrs []byte) []byte {
	b := make([]byte, 16+4, 16+4+len(attrs))
	binary.NativeEndian.PutUint16(b[4:], nfnlSubsysQueue<<8|uint16(msg))
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b[16], b[17] = unix.AF_UNSPEC, 0
	binary.BigEndian.PutUint16(b[18:], queue)
	b = append(b, attrs...)
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	return b
}

// attr is one netlink attribute, padded to 4 bytes.
func attr(typ uint16, v []byte) []byte {
	b := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(b, uint16(4+len(v)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
