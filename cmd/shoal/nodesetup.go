package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"

	"github.com/shoal-dev/shoal/agent/nodesetup"
)

// runNodeSetup points the node's container runtime at its agent (shoal
// node-setup), or removes that again (--uninstall). With --wait it stays
// until a signal and then uninstalls: the chart runs it so, as a sidecar,
// so a removed agent leaves no mirror entry behind.
func runNodeSetup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node-setup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o nodesetup.Options
	var regs stringList
	fs.Var(&regs, "registry", "registry host to mirror, HOST[:PORT][=SERVER-URL] (repeatable; default _default: every registry)")
	fs.StringVar(&o.Mirror, "mirror", nodesetup.DefaultMirror, "the agent's registry API as the runtime reaches it")
	fs.StringVar(&o.Root, "root", "", "prefix of every path below (the host's / as mounted in a container, e.g. /host)")
	fs.StringVar(&o.CertsDir, "certs-dir", nodesetup.DefaultCertsDir, "containerd's hosts.toml directory (the CRI registry config_path)")
	fs.StringVar(&o.ContainerdConfig, "containerd-config", nodesetup.DefaultContainerdConfig, "containerd's config, checked for config_path (never written)")
	fs.StringVar(&o.CRIODropIn, "crio-dropin", nodesetup.DefaultCRIODropIn, "CRI-O registries.conf.d drop-in to write")
	runtimes := fs.String("runtime", "containerd", "runtimes to configure: containerd, cri-o, or containerd,cri-o")
	uninstall := fs.Bool("uninstall", false, "remove what node-setup wrote, nothing else")
	wait := fs.Bool("wait", false, "after setting up, wait for SIGTERM/SIGINT, then uninstall")
	restart := fs.Bool("restart-containerd", false, "run --restart-command after setting up (hosts.toml changes need no restart; config_path changes do)")
	restartCmd := fs.String("restart-command", "systemctl restart containerd", "command --restart-containerd runs (in a pod: nsenter -t 1 -m -- systemctl restart containerd, with hostPID)")
	prepare := fs.String("prepare-dir", "", "also create this directory (under --root) and chown it to --prepare-owner: the agent's hostPath cache")
	owner := fs.String("prepare-owner", "65532:65532", "UID:GID for --prepare-dir")
	logLevel := fs.String("log-level", "info", "debug, info, warn, error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	for _, r := range regs {
		reg, err := nodesetup.ParseRegistry(r)
		if err != nil {
			return usageError{fmt.Errorf("--registry: %w", err)}
		}
		o.Registries = append(o.Registries, reg)
	}
	for _, rt := range strings.Split(*runtimes, ",") {
		switch strings.TrimSpace(rt) {
		case "containerd":
			o.Containerd = true
		case "cri-o", "crio":
			o.CRIO = true
		default:
			return usageError{fmt.Errorf("--runtime: %q is not containerd or cri-o", rt)}
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level: %w", err)}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})).With("role", "node-setup")

	if *uninstall {
		return nodesetup.Uninstall(o, log)
	}
	if *prepare != "" {
		var uid, gid int
		if _, err := fmt.Sscanf(*owner, "%d:%d", &uid, &gid); err != nil {
			return usageError{fmt.Errorf("--prepare-owner %q: want UID:GID", *owner)}
		}
		dir := o.Root + *prepare
		if err := nodesetup.PrepareDir(dir, uid, gid); err != nil {
			return fmt.Errorf("--prepare-dir %s: %w", dir, err)
		}
	}
	if err := nodesetup.Install(o, log); err != nil {
		return err
	}
	if *restart {
		f := strings.Fields(*restartCmd)
		if len(f) == 0 {
			return usageError{fmt.Errorf("--restart-command is empty")}
		}
		out, err := exec.CommandContext(ctx, f[0], f[1:]...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("restart containerd (%s): %w: %s", *restartCmd, err, strings.TrimSpace(string(out)))
		}
		log.Info("containerd restarted", "command", *restartCmd)
	}
	if !*wait {
		return nil
	}
	fmt.Fprintln(stdout, "node-setup: done; waiting for a signal to uninstall")
	<-ctx.Done()
	return nodesetup.Uninstall(o, log)
}
