package nodesetup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Markers. A whole file setup wrote starts with fileMarker (dirMarker when
// setup also created its directory); a block in a user's file lies between
// blockBegin and blockEnd lines.
const (
	fileMarker = "# Written by shoal node-setup; `shoal node-setup --uninstall` removes this file.\n"
	dirMarker  = "# Written by shoal node-setup; `shoal node-setup --uninstall` removes this file and its directory.\n"
	blockBegin = "# BEGIN shoal node-setup: the node's Shoal agent, tried first (`shoal node-setup --uninstall` removes this block)\n"
	blockEnd   = "# END shoal node-setup\n"
)

// hostBlock is the agent's [host] table, marked. containerd adds
// ?ns=<registry-host> to every request to a mirror itself.
func hostBlock(mirror string) string {
	return blockBegin + fmt.Sprintf("[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", mirror) + blockEnd
}

// wholeFile is the hosts.toml setup writes where the user had none.
func wholeFile(marker string, r Registry, mirror string) string {
	return wholeHead(marker, r) + hostBlock(mirror)
}

// wholeHead is wholeFile without the agent's block.
func wholeHead(marker string, r Registry) string {
	s := marker
	if srv := r.server(); srv != "" {
		s += fmt.Sprintf("\n# Where containerd goes when the agent fails.\nserver = %q\n", srv)
	}
	return s + "\n"
}

func hostsPath(o Options, r Registry) string {
	return filepath.Join(o.path(o.CertsDir), r.Host, "hosts.toml")
}

// installHosts writes r's hosts.toml or adds the agent's block to the
// user's one; it returns the file's path.
func installHosts(o Options, r Registry) (string, error) {
	p := hostsPath(o, r)
	dir := filepath.Dir(p)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		marker := fileMarker
		if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
			marker = dirMarker
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return p, err
			}
		}
		return p, writeAtomic(p, []byte(wholeFile(marker, r, o.Mirror)), 0o644)
	case err != nil:
		return p, err
	}
	old := string(b)
	if strings.HasPrefix(old, fileMarker) || strings.HasPrefix(old, dirMarker) {
		// Ours from an earlier run: rewrite it unless the user added to it.
		marker := fileMarker
		if strings.HasPrefix(old, dirMarker) {
			marker = dirMarker
		}
		if rest, _ := cutBlock(old); rest == wholeHead(marker, r) {
			return p, writeAtomic(p, []byte(wholeFile(marker, r, o.Mirror)), 0o644)
		}
	}
	user, _ := cutBlock(old)
	if strings.Contains(user, fmt.Sprintf("[host.%q]", o.Mirror)) {
		return p, fmt.Errorf("%s already has a [host.%q] table of its own: left as it is", p, o.Mirror)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return p, err
	}
	return p, writeAtomic(p, []byte(insertBlock(user, hostBlock(o.Mirror))), fi.Mode().Perm())
}

// insertBlock puts block before the first table header of a user's
// hosts.toml (its top-level keys such as server must stay above every
// table), or at the end when it has none.
func insertBlock(user, block string) string {
	off := 0
	for _, line := range strings.SplitAfter(user, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "[") && strings.HasSuffix(line, "\n") {
			return user[:off] + block + user[off:]
		}
		off += len(line)
	}
	if user != "" && !strings.HasSuffix(user, "\n") {
		return user + "\n" + strings.TrimSuffix(block, "\n")
	}
	return user + block
}

// cutBlock removes the marked block from s, exactly undoing insertBlock.
func cutBlock(s string) (string, bool) {
	i := strings.Index(s, blockBegin)
	if i < 0 {
		return s, false
	}
	j := strings.Index(s[i:], strings.TrimSuffix(blockEnd, "\n"))
	if j < 0 {
		return s, false
	}
	end := i + j + len(blockEnd) - 1
	if end < len(s) && s[end] == '\n' {
		return s[:i] + s[end+1:], true
	}
	// Appended to a file without a final newline: drop the one added.
	return strings.TrimSuffix(s[:i], "\n") + s[end:], true
}

// uninstallHosts removes the agent's block, or the whole file (and
// directory) when setup wrote them and nobody added to them since.
func uninstallHosts(o Options, r Registry) (path, removed string, err error) {
	p := hostsPath(o, r)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return p, "", nil
	}
	if err != nil {
		return p, "", err
	}
	rest, found := cutBlock(string(b))
	for _, marker := range []string{fileMarker, dirMarker} {
		if rest != wholeHead(marker, r) {
			continue
		}
		if err := os.Remove(p); err != nil {
			return p, "", err
		}
		if marker == dirMarker {
			// Only when empty: the user may have put certificates there.
			if err := os.Remove(filepath.Dir(p)); err == nil {
				return p, "file and directory", nil
			}
		}
		return p, "file", nil
	}
	if !found {
		return p, "", nil
	}
	fi, err := os.Stat(p)
	if err != nil {
		return p, "", err
	}
	return p, "block", writeAtomic(p, []byte(rest), fi.Mode().Perm())
}

// CheckConfigPath reads containerd's config (file: where to read it; shown:
// its name on the host) and returns one line with the fix when the CRI
// registry's config_path does not name certsDir, or "" when it does.
func CheckConfigPath(file, shown, certsDir string) string {
	var cfg struct {
		Version int            `toml:"version"`
		Plugins map[string]any `toml:"plugins"`
	}
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("containerd: %s does not exist, so containerd 1.x reads no hosts.toml and pulls bypass the agent: "+
			"create it with `[plugins.\"io.containerd.grpc.v1.cri\".registry] config_path = %q` and restart containerd", shown, certsDir)
	}
	if err != nil {
		return fmt.Sprintf("containerd: cannot read %s (%v): check that its CRI registry config_path is %q", shown, err, certsDir)
	}
	if _, err := toml.Decode(string(b), &cfg); err != nil {
		return fmt.Sprintf("containerd: %s is not valid TOML (%v): check that its CRI registry config_path is %q", shown, err, certsDir)
	}
	// containerd 2.x (config version 3): the images plugin; 1.6/1.7
	// (version 2): the CRI plugin; version 1: the "cri" plugin.
	plugin, table := "io.containerd.grpc.v1.cri", `plugins."io.containerd.grpc.v1.cri".registry`
	switch cfg.Version {
	case 3:
		plugin, table = "io.containerd.cri.v1.images", `plugins."io.containerd.cri.v1.images".registry`
	case 0, 1:
		plugin, table = "cri", "plugins.cri.registry"
	}
	var cp any
	if p, ok := cfg.Plugins[plugin].(map[string]any); ok {
		if reg, ok := p["registry"].(map[string]any); ok {
			cp = reg["config_path"]
		}
	}
	path, _ := cp.(string)
	if path == "" && cfg.Version == 3 {
		// containerd 2.x's default.
		path = "/etc/containerd/certs.d:/etc/docker/certs.d"
	}
	if path == "" {
		return fmt.Sprintf("containerd: %s sets no config_path, so containerd reads no hosts.toml and pulls bypass the agent: "+
			"set `[%s] config_path = %q` and restart containerd", shown, table, certsDir)
	}
	for _, d := range filepath.SplitList(path) {
		if filepath.Clean(d) == filepath.Clean(certsDir) {
			return ""
		}
	}
	return fmt.Sprintf("containerd: %s has config_path = %q, which does not include %s, so pulls bypass the agent: "+
		"set `[%s] config_path = %q` (or run node-setup with --certs-dir %s) and restart containerd",
		shown, path, certsDir, table, certsDir, filepath.SplitList(path)[0])
}
