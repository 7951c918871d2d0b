package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/config"
)

// TestSwarmNetns runs a small swarm on the emulated network: agents as
// processes in namespaces, tc on their links, 20 ms RTT. Every pull must
// verify, the RTT must be there, tc must cap each agent's download, and
// nothing of the network may be left afterwards.
func TestSwarmNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the shoal binary and a network of namespaces")
	}
	if err := NetnsCheck(); err != nil {
		t.Skipf("skipping: %v", err)
	}
	if out, err := exec.Command("ip", "netns", "add", "shbprobe-bench").CombinedOutput(); err != nil {
		t.Skipf("skipping: network namespaces not permitted here: %v: %s", err, out)
	}
	_ = exec.Command("ip", "netns", "del", "shbprobe-bench").Run()
	bin := shoalBinary(t)
	const (
		n    = 4
		size = 8 << 20
		rate = 4_000_000
		rtt  = 20 * time.Millisecond
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Swarm(ctx, SwarmOptions{Agents: n, Size: size, Rate: rate, Netns: true, RTT: rtt, Binary: bin, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("p50 %.2fx, max %.2fx of T_min %.2f s; first byte p50 %.2f s; origin sent %.2f F; RTT to the tracker %.1f ms, to a peer %.1f ms; %d packets delayed; cpu %.1f s (host %.1f s)",
		r.P50OverTMin, r.MaxOverTMin, r.TMinSeconds, r.TTFBSecondsP50, r.OriginSentOverF,
		r.MeasuredRTTSeconds*1e3, r.MeasuredPeerRTTSeconds*1e3, r.DelayedPackets, r.CPUSeconds, r.HostCPUSeconds)
	if !r.AllVerified || len(r.Clients) != n {
		t.Fatalf("verified %v, %d clients, failures %v", r.AllVerified, len(r.Clients), r.Failures)
	}
	sane(t, r, "t_min_seconds", "agent_seconds_p50", "ttfb_seconds_p50", "bytes_from_origins", "cpu_seconds", "host_cpu_seconds", "delayed_packets")
	if got := r.BytesFromOrigins + r.BytesFromPeers; got < n*size {
		t.Errorf("agents got %d bytes from origins and peers, want >= %d", got, n*size)
	}
	// Every packet waits RTT/2 at its receiver: a connect takes one RTT.
	for _, m := range []struct {
		name string
		secs float64
	}{{"to the tracker", r.MeasuredRTTSeconds}, {"to a peer", r.MeasuredPeerRTTSeconds}} {
		if m.secs < 0.9*rtt.Seconds() {
			t.Errorf("connect RTT %s: %.1f ms, want >= %.1f ms", m.name, m.secs*1e3, 0.9*rtt.Seconds()*1e3)
		}
	}
	// tc caps each agent's download: no client may get the blob faster
	// than its link (the bucket's first burst and queue add a little).
	for _, c := range r.Clients {
		if bps := float64(size) / c.Seconds; bps > 1.1*rate {
			t.Errorf("agent %d: %s in %.2f s = %s, over its %s link", c.Agent, config.ByteSize(size), c.Seconds,
				config.Rate(bps), config.Rate(rate))
		}
	}
	// Nothing of the network is left.
	prefix := fmt.Sprintf("shb%d", os.Getpid()%100000)
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), prefix+"-") {
		t.Errorf("namespaces left behind:\n%s", out)
	}
	if links, _ := os.ReadDir("/sys/class/net"); links != nil {
		for _, l := range links {
			if l.Name() == prefix || strings.HasPrefix(l.Name(), prefix+"v") {
				t.Errorf("link left behind: %s", l.Name())
			}
		}
	}
}
