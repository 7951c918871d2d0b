package p2p_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/internal/p2p"
)

// A downloader that announced before anyone else was in the swarm (the
// first agent asking for a cold blob announces about when the origin that
// just began fetching it does) asks the tracker again soon, not after
// announce_interval: it has the blob long before that interval is out.
// Real tracker, real nodes; the seed announces 200 ms after the
// downloader, whose announce_interval is 20 s.
func TestLonelyDownloaderAnnouncesAgainSoon(t *testing.T) {
	for k, engine := range []string{p2p.EngineShoal, p2p.EngineLibrary} {
		t.Run(engine, func(t *testing.T) {
			trk := startTracker(t)
			blob, mi := p2p.BlobMeta(t, 1<<20, 64<<10)
			n, reg := startNode(t, fmt.Sprintf("127.0.0.%d", 51+2*k), trk, p2p.Config{Engine: engine, AnnounceInterval: 20 * time.Second})
			start := time.Now()
			sw, _ := p2p.StartDownload(t, n, blob, mi)
			// Its first announce came back with nobody.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if asked, _, _ := announces(t, reg); asked >= 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no announce within 5 s")
				}
			}
			time.Sleep(200 * time.Millisecond)
			seed, _ := startNode(t, fmt.Sprintf("127.0.0.%d", 52+2*k), trk, p2p.Config{Engine: engine})
			if _, err := seed.Seed(mi, bytes.NewReader(blob), nil); err != nil {
				t.Fatal(err)
			}
			// Well within the 20 s announce_interval (the tracker's own
			// interval is longer still).
			for deadline := time.Now().Add(10 * time.Second); !sw.Complete(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					asked, quiet, _ := announces(t, reg)
					t.Fatalf("not complete %v after it started (%v announces asked for peers, %v did not): it did not ask the tracker again soon",
						time.Since(start).Round(time.Millisecond), asked, quiet)
				}
			}
			asked, _, _ := announces(t, reg)
			t.Logf("%s: complete after %v, %v announces", engine, time.Since(start).Round(time.Millisecond), asked)
		})
	}
}
