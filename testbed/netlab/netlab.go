// Package netlab builds a small emulated network on one Linux machine: a
// bridge in a namespace of its own, joined by veth pairs to the root
// namespace and to one network namespace per host; each host's upload and
// download capped with tc (tbf on both ends of its veth), and a one-way
// delay on every packet a host receives, so that any two hosts, or a host
// and the root namespace, see the same round-trip time. It needs root,
// iproute2 (ip, tc) and iptables (its NFQUEUE target).
package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options shape a lab.
type Options struct {
	// RTT is the round trip between any two hosts (and between a host and
	// the root namespace's addresses on the bridge): each receiver holds
	// every packet RTT/2. 0: no delay.
	RTT time.Duration
	// MTU of every link (0: the kernel's 1500). Jumbo frames (9000) cut
	// the packets, and so the per-packet CPU, of a lab that packs dozens
	// of hosts onto a few cores.
	MTU int
	Log *slog.Logger
}

// Lab is a bridge with hosts on it. Close removes everything it made.
type Lab struct {
	// Bridge names the root namespace's link to the bridge; it is also the
	// prefix of every name the lab makes.
	Bridge string
	// Subnet is the bridge's /16; the root namespace has Gateway on it.
	Subnet  netip.Prefix
	Gateway netip.Addr

	opts     Options
	log      *slog.Logger
	mu       sync.Mutex
	hosts    []*Host
	switchNS string       // holds the bridge
	extra    []netip.Addr // root-namespace addresses added to the bridge
	lines    []*delayLine
	rules    [][]string // the root namespace's iptables rules: table, chain, spec
	lock     *os.File   // flocked while the lab lives (lockDir)
	closed   bool
}

// Host is one namespace on the bridge.
type Host struct {
	NS   string     // network namespace name
	IP   netip.Addr // its address on the bridge
	Veth string     // the switch end of its veth pair (in the switch namespace)
}

// Check says what is missing to build a lab here (nil: nothing).
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("netlab: needs root (network namespaces, veth pairs, tc)")
	}
	for _, tool := range []struct{ bin, pkg string }{{"ip", "iproute2"}, {"tc", "iproute2"}, {"iptables", "iptables"}} {
		if _, err := exec.LookPath(tool.bin); err != nil {
			return fmt.Errorf("netlab: %s not found: install %s", tool.bin, tool.pkg)
		}
	}
	return nil
}

// New makes the bridge. Its name and subnet are picked so that labs of
// different processes can coexist.
func New(ctx context.Context, o Options) (_ *Lab, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MTU != 0 && (o.MTU < 576 || o.MTU > 65535) {
		return nil, fmt.Errorf("netlab: MTU %d: want 576..65535", o.MTU)
	}
	reapDead(ctx, o.Log)
	l := &Lab{Bridge: fmt.Sprintf("shb%d", os.Getpid()%100000), opts: o, log: o.Log}
	if l.lock, err = lockLab(l.Bridge); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if l.Subnet, err = freeSubnet(ctx); err != nil {
		return nil, err
	}
	l.Gateway = l.Subnet.Addr().Next()
	// The bridge lives in a namespace of its own, where br_netfilter is
	// off: bridged packets then skip iptables and conntrack (the root
	// namespace has them on for Docker, and they cost as much CPU as the
	// agents). The root namespace joins it by a veth pair whose root end,
	// named like the lab, holds the gateway and core addresses.
	l.switchNS = l.Bridge + "-sw"
	steps := [][]string{
		{"ip", "netns", "add", l.switchNS},
		{"ip", "-n", l.switchNS, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.switchNS, "link", "set", "br0", "up"},
		{"ip", "link", "add", l.Bridge, "type", "veth", "peer", "name", "core", "netns", l.switchNS},
		{"ip", "-n", l.switchNS, "link", "set", "core", "master", "br0"},
		{"ip", "-n", l.switchNS, "link", "set", "core", "up"},
		{"ip", "addr", "add", netip.PrefixFrom(l.Gateway, 16).String(), "dev", l.Bridge},
		{"ip", "link", "set", l.Bridge, "mtu", mtu(o.MTU)},
		{"ip", "-n", l.switchNS, "link", "set", "core", "mtu", mtu(o.MTU)},
		{"ip", "link", "set", l.Bridge, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	for _, key := range []string{"bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"} {
		// Absent without br_netfilter: then there is nothing to turn off.
		_ = run(ctx, "ip", "netns", "exec", l.switchNS, "sh", "-c", "[ ! -e /proc/sys/net/bridge/"+key+" ] || echo 0 > /proc/sys/net/bridge/"+key)
	}
	if o.RTT > 0 {
		// The root namespace's half: packets from the lab wait RTT/2.
		if err := l.addRule(ctx, "mangle", "PREROUTING", "-i", l.Bridge, "-s", l.Subnet.String(),
			"-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"); err != nil {
			return nil, err
		}
		line, err := openDelayLine(0, o.RTT/2)
		if err != nil {
			return nil, err
		}
		l.lines = append(l.lines, line)
	}
	return l, nil
}

// addRule puts an iptables rule first in the root namespace's chain.
func (l *Lab) addRule(ctx context.Context, table, chain string, spec ...string) error {
	if err := run(ctx, "iptables", append([]string{"-w", "-t", table, "-I", chain, "1"}, spec...)...); err != nil {
		return err
	}
	l.mu.Lock()
	l.rules = append(l.rules, append([]string{table, chain}, spec...))
	l.mu.Unlock()
	return nil
}

// freeSubnet picks 10.x.0.0/16 (x in 200..249) that no interface here uses.
func freeSubnet(ctx context.Context) (netip.Prefix, error) {
	out, err := output(ctx, "ip", "-4", "-o", "addr", "show")
	if err != nil {
		return netip.Prefix{}, err
	}
	routes, err := output(ctx, "ip", "-4", "route", "show")
	if err != nil {
		return netip.Prefix{}, err
	}
	start := os.Getpid() % 50
	for k := range 50 {
		x := 200 + (start+k)%50
		p := fmt.Sprintf("10.%d.", x)
		if !strings.Contains(out, " "+p) && !strings.Contains(routes, p) {
			return netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", x)), nil
		}
	}
	return netip.Prefix{}, errors.New("netlab: no free 10.x.0.0/16 (x in 200..249)")
}

// CoreAddr adds 10.x.0.(2+i) to the bridge in the root namespace (for a
// server of the root namespace that should look like its own host).
func (l *Lab) CoreAddr(ctx context.Context, i int) (netip.Addr, error) {
	if i < 0 || i > 200 {
		return netip.Addr{}, fmt.Errorf("netlab: core address %d: want 0..200", i)
	}
	a := l.Subnet.Addr().As4()
	a[3] = byte(2 + i)
	ip := netip.AddrFrom4(a)
	if err := run(ctx, "ip", "addr", "add", netip.PrefixFrom(ip, 32).String(), "dev", l.Bridge); err != nil {
		return netip.Addr{}, err
	}
	l.mu.Lock()
	l.extra = append(l.extra, ip)
	l.mu.Unlock()
	return ip, nil
}

// AddHost makes host i: namespace, veth pair, address 10.x.(1+i/250).(1+i%250),
// default route via the gateway, upload (up) and download (down) caps in
// bytes per second (0: none), and the receive delay.
func (l *Lab) AddHost(ctx context.Context, i int, up, down int64) (_ *Host, err error) {
	if i < 0 || i >= 250*250 {
		return nil, fmt.Errorf("netlab: host %d out of range", i)
	}
	a := l.Subnet.Addr().As4()
	a[2], a[3] = byte(1+i/250), byte(1+i%250)
	h := &Host{NS: fmt.Sprintf("%s-%d", l.Bridge, i), IP: netip.AddrFrom4(a), Veth: fmt.Sprintf("%sv%d", l.Bridge, i)}
	l.mu.Lock()
	l.hosts = append(l.hosts, h) // before anything exists: Close removes what did get made
	l.mu.Unlock()
	const inner = "eth0"
	steps := [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "-n", l.switchNS, "link", "add", h.Veth, "type", "veth", "peer", "name", inner, "netns", h.NS},
		{"ip", "-n", l.switchNS, "link", "set", h.Veth, "master", "br0"},
		{"ip", "-n", l.switchNS, "link", "set", h.Veth, "mtu", mtu(l.opts.MTU)},
		{"ip", "-n", h.NS, "link", "set", inner, "mtu", mtu(l.opts.MTU)},
		{"ip", "-n", l.switchNS, "link", "set", h.Veth, "up"},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", h.NS, "addr", "add", netip.PrefixFrom(h.IP, 16).String(), "dev", inner},
		{"ip", "-n", h.NS, "link", "set", inner, "up"},
		{"ip", "-n", h.NS, "route", "add", "default", "via", l.Gateway.String()},
	}
	if up > 0 {
		steps = append(steps, append([]string{"ip", "netns", "exec", h.NS}, tbf(inner, up, l.opts.RTT)...))
	}
	if down > 0 {
		steps = append(steps, append([]string{"ip", "netns", "exec", l.switchNS}, tbf(h.Veth, down, l.opts.RTT)...))
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	if l.opts.RTT > 0 {
		if err := run(ctx, "ip", "netns", "exec", h.NS, "iptables", "-w", "-t", "mangle", "-A", "PREROUTING", "-i", inner,
			"-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"); err != nil {
			return nil, err
		}
		err := InNetns(h.NS, func() error {
			line, err := openDelayLine(0, l.opts.RTT/2)
			if err == nil {
				l.mu.Lock()
				l.lines = append(l.lines, line)
				l.mu.Unlock()
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

func mtu(m int) string {
	if m <= 0 {
		m = 1500
	}
	return strconv.Itoa(m)
}

// tbf caps dev's egress at rate bytes/s. The bucket holds at least one
// 64 KiB GSO segment (tbf would split bigger ones) and 2 ms of the rate; the
// queue holds about one bandwidth-delay product (at least 10 ms), as a
// switch port's buffer would, so TCP can fill the link without the queue
// adding much to the RTT.
func tbf(dev string, rate int64, rtt time.Duration) []string {
	burst := max(int64(64<<10)+1600, rate/500)
	queue := max(rtt, 10*time.Millisecond)
	limit := burst + int64(float64(rate)*queue.Seconds())
	return []string{"tc", "qdisc", "add", "dev", dev, "root", "tbf",
		"rate", fmt.Sprintf("%dbps", rate), "burst", fmt.Sprint(burst), "limit", fmt.Sprint(limit)}
}

// DelayErr is the first error of any delay line (nil while all work).
func (l *Lab) DelayErr() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.lines {
		if err := d.Err(); err != nil {
			return err
		}
	}
	return nil
}

// DelayedPackets counts the packets that went through the delay lines.
func (l *Lab) DelayedPackets() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for _, d := range l.lines {
		n += d.Packets()
	}
	return n
}

// Close removes every namespace, link, address and iptables rule the lab
// made. It goes on past errors and returns them all.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	hosts, lines := l.hosts, l.lines
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	for _, r := range l.rules {
		errs = append(errs, run(ctx, "iptables", append([]string{"-w", "-t", r[0], "-D"}, r[1:]...)...))
	}
	for _, d := range lines {
		d.Close()
	}
	// Deleting a namespace deletes its ends of the veth pairs, and so the
	// pairs (asynchronously: the root end may linger a moment).
	for _, h := range hosts {
		if exists("/var/run/netns/" + h.NS) {
			errs = append(errs, run(ctx, "ip", "netns", "del", h.NS))
		}
	}
	if l.switchNS != "" && exists("/var/run/netns/"+l.switchNS) {
		errs = append(errs, run(ctx, "ip", "netns", "del", l.switchNS))
	}
	if err := run(ctx, "ip", "link", "del", l.Bridge); err != nil && linkExists(l.Bridge) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return err // the lock stays: the next lab's New retries
	}
	if l.lock == nil {
		return nil
	}
	_ = os.Remove(filepath.Join(lockDir, l.Bridge+".lock"))
	return l.lock.Close()
}

// lockDir holds a lock file per lab, flocked for as long as the lab
// lives. A process killed outright (SIGKILL, or a crash of the machine's
// last run) cannot Close its lab: the next New finds that lock free and
// removes what the lab left, so leftovers do not pile up, nor take the
// 50 subnets freeSubnet picks from.
var lockDir = "/run/shoal-netlab"

// lockLab takes the lock of a lab named bridge. It is flocked under a
// temporary name and then renamed into place, so that reapDead never
// sees it free.
func lockLab(bridge string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o755); err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	f, err := os.CreateTemp(lockDir, bridge+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("netlab: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("netlab: lock %s: %w", f.Name(), err)
	}
	path := filepath.Join(lockDir, bridge+".lock")
	if other, err := os.OpenFile(path, os.O_RDWR, 0); err == nil {
		// A lab of the same name: a live one (another process whose pid
		// matches ours mod 100000) holds its lock.
		busy := syscall.Flock(int(other.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil
		other.Close()
		if busy {
			f.Close()
			os.Remove(f.Name())
			return nil, fmt.Errorf("netlab: a lab named %s is in use by another process", bridge)
		}
	}
	if err := os.Rename(f.Name(), path); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("netlab: %w", err)
	}
	return f, nil
}

// reapDead removes the labs whose process died without closing them
// (their lock is free): their namespaces (with them their veth pairs),
// their root link and the root namespace's iptables rules on it. It is
// best effort: what it cannot remove, the next New tries again.
func reapDead(ctx context.Context, log *slog.Logger) {
	locks, _ := filepath.Glob(filepath.Join(lockDir, "*.lock"))
	for _, path := range locks {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // its lab lives
			continue
		}
		bridge := strings.TrimSuffix(filepath.Base(path), ".lock")
		if err := removeLab(ctx, bridge); err != nil {
			log.Warn("netlab: removing a dead process's lab", "lab", bridge, "err", err)
		} else {
			log.Info("netlab: removed a dead process's lab", "lab", bridge)
			os.Remove(path)
		}
		f.Close()
	}
}

// removeLab deletes what a lab named bridge made (leftoversOf).
func removeLab(ctx context.Context, bridge string) error {
	left, err := leftoversOf(ctx, bridge)
	if err != nil {
		return err
	}
	var errs []error
	for _, ns := range left.namespaces {
		errs = append(errs, run(ctx, "ip", "netns", "del", ns))
	}
	if left.link {
		if err := run(ctx, "ip", "link", "del", bridge); err != nil && linkExists(bridge) {
			errs = append(errs, err)
		}
	}
	for _, r := range left.rules {
		errs = append(errs, run(ctx, "iptables", append([]string{"-w", "-t", "mangle", "-D"}, r...)...))
	}
	return errors.Join(errs...)
}

// labParts are what exists of a lab: its namespaces (bridge-*), whether
// the root link is there, and the root namespace's mangle rules on it
// (chain and spec, as iptables -S prints them after -A).
type labParts struct {
	namespaces []string
	link       bool
	rules      [][]string
}

func (p labParts) empty() bool { return len(p.namespaces) == 0 && !p.link && len(p.rules) == 0 }

// leftoversOf lists what exists of the lab named bridge.
func leftoversOf(ctx context.Context, bridge string) (labParts, error) {
	var p labParts
	list, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return p, err
	}
	for _, line := range strings.Split(list, "\n") {
		// "name" or "name (id: 3)"
		if ns, _, _ := strings.Cut(strings.TrimSpace(line), " "); strings.HasPrefix(ns, bridge+"-") {
			p.namespaces = append(p.namespaces, ns)
		}
	}
	p.link = linkExists(bridge)
	rules, err := output(ctx, "iptables", "-w", "-t", "mangle", "-S", "PREROUTING")
	if err != nil {
		return p, err
	}
	for _, r := range strings.Split(rules, "\n") {
		if f := strings.Fields(r); len(f) >= 2 && f[0] == "-A" && strings.Contains(r+" ", " -i "+bridge+" ") {
			p.rules = append(p.rules, f[1:])
		}
	}
	return p, nil
}

// Leftovers lists what of this lab still exists (for tests: nothing).
func (l *Lab) Leftovers() []string {
	p, err := leftoversOf(context.Background(), l.Bridge)
	if err != nil {
		return []string{err.Error()}
	}
	var left []string
	for _, ns := range p.namespaces {
		left = append(left, "netns "+ns)
	}
	if p.link {
		left = append(left, "link "+l.Bridge)
	}
	for _, r := range p.rules {
		left = append(left, "iptables rule "+strings.Join(r, " "))
	}
	if lock := filepath.Join(lockDir, l.Bridge+".lock"); exists(lock) {
		left = append(left, "lock "+lock)
	}
	return left
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func linkExists(name string) bool { return exists("/sys/class/net/" + name) }

func run(ctx context.Context, name string, args ...string) error {
	return runIn(ctx, "", name, args...)
}

func runIn(ctx context.Context, stdin, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}
