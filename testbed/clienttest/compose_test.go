package clienttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestComposeSwarm builds the images (make images) and runs
// examples/compose/run.sh: registry, tracker, two origins, a build-index and
// three agents in containers; every agent pulls the sample image by tag,
// every digest must verify, and the agents together must have received more
// bytes from each other than from the (upload-capped) origins. Host ports
// are moved off the defaults so a swarm left running with `run.sh --keep`
// does not collide.
func TestComposeSwarm(t *testing.T) {
	need(t, "docker", "make", "curl")
	if out, err := tryRun(20*time.Second, "docker", "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("SKIP: no Docker engine answers (docker info: %v): %s", err, out)
	}
	if _, err := tryRun(20*time.Second, "docker", "compose", "version"); err != nil {
		if _, err := exec.LookPath("docker-compose"); err != nil {
			t.Skip("SKIP: neither 'docker compose' nor docker-compose is installed")
		}
	}
	if testing.Short() {
		t.Skip("SKIP: -short: the compose swarm builds images and starts 8 containers")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// make images: bin/shoal (cached by Go), the static registry (cached in
	// bin/tools after the first build) and two FROM-scratch images.
	mk := exec.Command("make", "-C", root, "images")
	if out, err := runCmd(mk, 5*time.Minute); err != nil {
		t.Fatalf("make images: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(root, "examples/compose/run.sh"))
	cmd.Env = append(os.Environ(),
		"PROJECT=shoal-clienttest",
		"SHOAL_REGISTRY_PORT=17690",
		"SHOAL_AGENT1_PORT=17651", "SHOAL_AGENT2_PORT=17652", "SHOAL_AGENT3_PORT=17653",
		"SHOAL_AGENT1_ADMIN_PORT=17661", "SHOAL_AGENT2_ADMIN_PORT=17662", "SHOAL_AGENT3_ADMIN_PORT=17663",
	)
	start := time.Now()
	out, err := runCmd(cmd, 3*time.Minute)
	if err != nil {
		t.Fatalf("run.sh: %v\n%s", err, out)
	}
	t.Logf("run.sh (%.1fs):\n%s", time.Since(start).Seconds(), out)
	if !regexp.MustCompile(`(?m)^OK: 3 of 3 pulls verified$`).MatchString(out) {
		t.Fatalf("run.sh did not report 3 verified pulls:\n%s", out)
	}
	if n := len(regexp.MustCompile(`(?m)^agent\d: pulled .*every digest verified`).FindAllString(out, -1)); n != 3 {
		t.Fatalf("%d of 3 agents report a verified pull:\n%s", n, out)
	}
	// The origins' upload is capped and they super-seed: together they send
	// about one copy of the image, and the agents get more from each other
	// than from the origins (3 agents: ~90 MB from peers, ~60 MB from origins).
	m := regexp.MustCompile(`(?m)^total\s+(\d+)\s+(\d+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("run.sh printed no byte totals:\n%s", out)
	}
	fromOrigins, _ := strconv.ParseInt(m[1], 10, 64)
	fromPeers, _ := strconv.ParseInt(m[2], 10, 64)
	if fromPeers <= fromOrigins {
		t.Fatalf("agents received %d bytes from peers, not more than the %d from origins:\n%s", fromPeers, fromOrigins, out)
	}
}

func runCmd(cmd *exec.Cmd, timeout time.Duration) (string, error) {
	timer := time.AfterFunc(timeout, func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	})
	defer timer.Stop()
	out, err := cmd.CombinedOutput()
	return string(out), err
}
