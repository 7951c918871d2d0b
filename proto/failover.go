package proto

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"
)

// ErrNoServers is returned by Failover when it is given no server to ask.
var ErrNoServers = errors.New("no server configured")

// Policy adjusts the failover rule for one kind of request.
type Policy struct {
	// MoveOn lists 4xx statuses that are not final for this request: the
	// next server is asked. A tracker asking origins for a standard torrent
	// moves on after a 404, since the owner of a digest may not hold a blob
	// that another origin does. If every server answers one of these, the
	// last answer is returned; otherwise they are left out of the joined
	// error (they are answers, not failures).
	MoveOn []int
	// SplitDeadline gives each attempt an equal share of the time left
	// before ctx's deadline among the servers still to ask, so one server
	// that hangs does not use up the time of the others.
	SplitDeadline bool
	// Observe, when set, is called after every attempt with its result
	// (for logs and metrics).
	Observe func(server string, err error)
}

// Final reports whether err is a server's final answer: an *Error with a
// 4xx status that p does not move on from.
func (p Policy) Final(err error) (*Error, bool) {
	var he *Error
	if !errors.As(err, &he) || he.Status < 400 || he.Status >= 500 {
		return nil, false
	}
	return he, !slices.Contains(p.MoveOn, he.Status)
}

// Failover asks servers in the order given (ring order is the caller's)
// until try succeeds. A 4xx answer (an *Error from try) is final and is
// returned as that *Error; any other failure — a 5xx, a transport error, an
// answer try found malformed — moves on to the next server. When every
// server failed, the failures are returned joined. An ended ctx stops the
// loop, its error joined to the others.
func Failover[T any](ctx context.Context, servers []string, p Policy, try func(ctx context.Context, server string) (T, error)) (T, error) {
	var zero T
	if len(servers) == 0 {
		return zero, ErrNoServers
	}
	var errs []error
	var answer *Error
	for i, s := range servers {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		v, err := attempt(ctx, len(servers)-i, p.SplitDeadline, s, try)
		if p.Observe != nil {
			p.Observe(s, err)
		}
		if err == nil {
			return v, nil
		}
		if he, final := p.Final(err); he != nil {
			if final {
				return zero, he
			}
			answer = he
			continue
		}
		errs = append(errs, err)
	}
	if answer != nil && len(errs) == 0 {
		return zero, answer
	}
	return zero, errors.Join(errs...)
}

func attempt[T any](ctx context.Context, left int, split bool, server string, try func(context.Context, string) (T, error)) (T, error) {
	if dl, ok := ctx.Deadline(); ok && split && left > 1 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(left))
		defer cancel()
	}
	return try(ctx, server)
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool {
	var he *Error
	return errors.As(err, &he) && he.Status == http.StatusNotFound
}
