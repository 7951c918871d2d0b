package p2p_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/tracker"
)

// A downloading swarm that knows conns_per_torrent peers it could dial
// announces with numwant=0 (the tracker's answer is decoded for nothing
// otherwise), and only once the tracker's interval has passed: the ticks of
// announce_interval between are skipped. One that knows fewer keeps asking
// every tick. Real tracker (its interval 1 s), real nodes: a seed and four
// downloaders, three of them at one connection each (they know three spare
// peers) and one at eight (it can never know enough).
func TestAnnounceAsksForPeersOnlyWhenShort(t *testing.T) {
	trk := startTrackerWith(t, tracker.Config{Listen: "127.0.0.40:0", AnnounceInterval: time.Second})
	blob, mi := p2p.BlobMeta(t, 3<<20, 64<<10)

	seed, _ := startNode(t, "127.0.0.41", trk, p2p.Config{})
	if _, err := seed.Seed(mi, bytes.NewReader(blob), nil); err != nil {
		t.Fatal(err)
	}
	type downloader struct {
		reg   *prometheus.Registry
		sw    *p2p.Swarm
		conns int
		// announces counted while the swarm still downloaded
		asked, quiet, skipped float64
	}
	var ds []*downloader
	for k, conns := range []int{1, 1, 1, 8} {
		// 3 MiB at 1 MB/s: about 3 s of 100 ms ticks.
		n, reg := startNode(t, fmt.Sprintf("127.0.0.%d", 42+k), trk,
			p2p.Config{Engine: p2p.EngineShoal, ConnsPerTorrent: conns, DownloadRate: config.Rate(1_000_000), AnnounceInterval: 100 * time.Millisecond})
		sw, _ := p2p.StartDownload(t, n, blob, mi)
		ds = append(ds, &downloader{reg: reg, sw: sw, conns: conns})
	}
	deadline := time.Now().Add(30 * time.Second)
	for done := false; !done; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("downloads not complete after 30 s")
		}
		done = true
		for _, dn := range ds {
			if dn.sw.Complete() {
				continue
			}
			done = false
			asked, quiet, skipped := announces(t, dn.reg)
			// Counted only if it still lacked a piece after the read: an
			// announce once the last piece is in asks for no peers, and
			// Complete turns true a little later (the blob's digest is
			// checked first), so "not complete" let that one in.
			if dn.sw.BytesCompleted() < int64(len(blob)) {
				dn.asked, dn.quiet, dn.skipped = asked, quiet, skipped
			}
		}
	}
	for k, dn := range ds {
		t.Logf("downloader %d (%d conns): %v announces asked for peers, %v did not, %v ticks skipped, while downloading", k, dn.conns, dn.asked, dn.quiet, dn.skipped)
		switch {
		case dn.asked < 1:
			t.Errorf("downloader %d: no announce asked for peers", k)
		case dn.conns == 1 && dn.skipped < 5:
			t.Errorf("downloader %d knew spare peers for its one connection and still announced every tick (%v skipped)", k, dn.skipped)
		case dn.conns == 1 && dn.quiet < 1:
			t.Errorf("downloader %d knew spare peers for its one connection and never announced without asking for peers (the tracker's interval is 1 s)", k)
		case dn.conns == 8 && dn.quiet+dn.skipped > 0:
			t.Errorf("downloader %d knew fewer peers than its 8 connections and announced %v times without asking, skipped %v", k, dn.quiet, dn.skipped)
		}
	}
}

// startTracker runs a real in-memory tracker on 127.0.0.40 until the test
// ends.
func startTracker(t *testing.T) *tracker.Server {
	return startTrackerWith(t, tracker.Config{Listen: "127.0.0.40:0"})
}

func startTrackerWith(t *testing.T, cfg tracker.Config) *tracker.Server {
	t.Helper()
	srv, err := tracker.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("tracker: %v", err)
		}
	})
	return srv
}

// startNode starts a node on ip announcing to trk, its metrics in the
// returned registry.
func startNode(t *testing.T, ip string, trk *tracker.Server, cfg p2p.Config) (*p2p.Node, *prometheus.Registry) {
	t.Helper()
	cfg.ApplyDefaults(ip+":0", []string{trk.URL()})
	reg := prometheus.NewRegistry()
	n, err := p2p.NewNode(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n, reg
}

// announces reads shoal_p2p_announces_total{peers="asked"} and {"none"},
// and shoal_p2p_announces_skipped_total.
func announces(t *testing.T, reg *prometheus.Registry) (asked, quiet, skipped float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "shoal_p2p_announces_skipped_total":
			skipped = mf.GetMetric()[0].GetCounter().GetValue()
		case "shoal_p2p_announces_total":
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "peers" && l.GetValue() == "asked" {
						asked = m.GetCounter().GetValue()
					} else if l.GetName() == "peers" && l.GetValue() == "none" {
						quiet = m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return asked, quiet, skipped
}
