package testutil

import (
	"context"
	"sync"
	"testing"
	"time"
)

// Serve runs fn (a component's Run) until the test ends or stop is called,
// and checks that it stopped cleanly and in time.
func Serve(t testing.TB, what string, fn func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-errc:
				if err != nil {
					t.Errorf("%s: %v", what, err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("%s did not stop", what)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}
