package netlab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// killedLabEnv makes the test binary a process that builds a lab, prints
// its name and waits to be killed (TestMain).
const killedLabEnv = "SHOAL_NETLAB_KILLED_LAB"

func TestMain(m *testing.M) {
	if os.Getenv(killedLabEnv) != "" {
		os.Exit(buildLabAndWait())
	}
	os.Exit(m.Run())
}

func buildLabAndWait() int {
	ctx := context.Background()
	l, err := New(ctx, Options{RTT: 2 * time.Millisecond}) // RTT: a root iptables rule too
	if err == nil {
		_, err = l.AddHost(ctx, 0, 1e6, 1e6)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(l.Bridge)
	select {}
}

// labLeftovers lists what of the lab named bridge exists: namespaces,
// the root link, root iptables rules on it.
func labLeftovers(t *testing.T, bridge string) []string {
	t.Helper()
	var left []string
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(list), "\n") {
		if ns, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(ns, bridge+"-") {
			left = append(left, "netns "+ns)
		}
	}
	if linkExists(bridge) {
		left = append(left, "link "+bridge)
	}
	rules, err := exec.Command("iptables", "-w", "-t", "mangle", "-S", "PREROUTING").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range strings.Split(string(rules), "\n") {
		if strings.Contains(r+" ", " -i "+bridge+" ") {
			left = append(left, "iptables "+r)
		}
	}
	return left
}

// A process killed outright (SIGKILL) cannot close its lab; the next New
// removes what it left: namespaces, link, iptables rule and lock.
func TestNewRemovesTheLabOfAKilledProcess(t *testing.T) {
	skipUnlessLabs(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killedLabEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	named := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		named <- strings.TrimSpace(line)
	}()
	var bridge string
	select {
	case bridge = <-named:
	case <-time.After(time.Minute):
		t.Fatal("the lab's process printed no name within a minute")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if bridge == "" {
		t.Fatal("the lab's process failed (its stderr above)")
	}
	if left := labLeftovers(t, bridge); len(left) < 3 {
		t.Fatalf("the killed process left %v, want its namespaces, link and iptables rule", left)
	}
	newLab(t, Options{})
	if left := labLeftovers(t, bridge); len(left) > 0 {
		t.Errorf("after New, the killed process's lab is still there: %v", left)
	}
	if _, err := os.Stat(filepath.Join(lockDir, bridge+".lock")); !os.IsNotExist(err) {
		t.Errorf("its lock file: %v, want it gone", err)
	}
}
