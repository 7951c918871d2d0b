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
	root := composePrereqs(t)
	out := runSwarm(t, root, "shoal-clienttest", 17000)
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

// TestComposeSwarmTLS is the same swarm with mutual TLS between every
// component (TLS=1 run.sh: docker-compose.tls.yml, config-tls/, certificates
// made for the run and mounted into the containers; the upstream registry
// stays plain HTTP): every agent's pull verifies over https with a client
// certificate, every published server refuses a client without a
// certificate and one whose certificate another CA signed, and a
// certificate rotated in place is served without a restart while a new
// image still pulls through every agent.
func TestComposeSwarmTLS(t *testing.T) {
	root := composePrereqs(t)
	out := runSwarm(t, root, "shoal-clienttest-tls", 18000, "TLS=1")
	if !regexp.MustCompile(`(?m)^TLS: 6 of 6 servers refused clients without a certificate or with another CA's$`).MatchString(out) {
		t.Fatalf("run.sh did not report that every server refused clients without a valid certificate:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^TLS: rotated certificate served by 6 of 6 servers without a restart; a new image verified through every agent$`).MatchString(out) {
		t.Fatalf("run.sh did not report the certificate rotation:\n%s", out)
	}
}

// composePrereqs skips without Docker and compose, builds the images (make
// images) and returns the repository root.
func composePrereqs(t *testing.T) string {
	t.Helper()
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
	return root
}

// runSwarm runs examples/compose/run.sh as compose project project, its
// host ports at base+690 (registry), base+651.. (agents), base+661..
// (their admin ports), with env added; it checks that every agent's pull
// verified and returns the output.
func runSwarm(t *testing.T, root, project string, base int, env ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "examples/compose/run.sh"))
	port := func(p int) string { return strconv.Itoa(base + p) }
	cmd.Env = append(append(os.Environ(),
		"PROJECT="+project,
		"SHOAL_REGISTRY_PORT="+port(690),
		"SHOAL_AGENT1_PORT="+port(651), "SHOAL_AGENT2_PORT="+port(652), "SHOAL_AGENT3_PORT="+port(653),
		"SHOAL_AGENT1_ADMIN_PORT="+port(661), "SHOAL_AGENT2_ADMIN_PORT="+port(662), "SHOAL_AGENT3_ADMIN_PORT="+port(663),
	), env...)
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
	return out
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
