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
	if bridge == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the lab's process failed (its stderr above)")
	}
	// Looked at while its process holds the lock: a lab another test
	// process makes meanwhile cannot remove it yet.
	ctx := context.Background()
	left, err := leftoversOf(ctx, bridge)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(left.namespaces) < 2 || !left.link || len(left.rules) != 1 {
		t.Fatalf("the killed process left %+v, want its namespaces, link and iptables rule", left)
	}
	newLab(t, Options{})
	if left, err = leftoversOf(ctx, bridge); err != nil || !left.empty() {
		t.Errorf("after New, the killed process's lab is still there: %+v (%v)", left, err)
	}
	if _, err := os.Stat(filepath.Join(lockDir, bridge+".lock")); !os.IsNotExist(err) {
		t.Errorf("its lock file: %v, want it gone", err)
	}
}
