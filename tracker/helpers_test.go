package tracker_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"testing"

	"github.com/shoal-dev/shoal/tracker"
)

// startTracker runs a tracker on 127.0.0.1 until the test ends.
func startTracker(t *testing.T, cfg tracker.Config, opts ...tracker.Option) *tracker.Server {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := tracker.New(cfg, log, opts...)
	if err != nil {
		t.Fatalf("tracker.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		// A connection the client dialed but never used is "new" to the
		// server, and graceful shutdown waits 5s before it counts as idle.
		http.DefaultClient.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("tracker Run: %v", err)
		}
	})
	return srv
}
