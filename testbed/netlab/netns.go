package netlab

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"golang.org/x/sys/unix"
)

// InNetns runs f on an OS thread that has joined network namespace ns (a
// name under /var/run/netns). Sockets f creates stay in that namespace
// whatever thread uses them later. The thread is thrown away afterwards,
// so no other goroutine ever runs in the namespace.
func InNetns(ns string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the runtime ends a thread whose goroutine exits
		// locked, so the namespace switch dies with it.
		runtime.LockOSThread()
		fd, err := unix.Open("/var/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("netns %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("netns %s: setns: %w", ns, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// DialContext dials from inside namespace ns (a net.Dialer's DialContext
// for an http.Transport whose client lives on that node).
func DialContext(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := InNetns(ns, func() error {
			var err error
			c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}
