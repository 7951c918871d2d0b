// Package nodesetup points a node's container runtime at its Shoal agent:
// containerd hosts.toml mirror entries under certs.d and a CRI-O
// registries.conf.d drop-in, and removes exactly what it wrote again.
//
// The user's own files are never rewritten beyond one marked block: in an
// existing hosts.toml the agent's [host] table is inserted before the
// user's first table (so containerd tries it first) between BEGIN/END
// marker lines, and uninstall cuts exactly those bytes out again. A
// hosts.toml that did not exist is written whole, with a marker line, and
// uninstall removes it (and its directory when setup created that).
package nodesetup

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/shoal-dev/shoal/internal/fsutil"
)

// Defaults of Options.
const (
	DefaultCertsDir         = "/etc/containerd/certs.d"
	DefaultContainerdConfig = "/etc/containerd/config.toml"
	DefaultCRIODropIn       = "/etc/containers/registries.conf.d/shoal.conf"
	DefaultMirror           = "http://127.0.0.1:7650"
	// DefaultRegistry is containerd's fallback directory: its hosts.toml
	// applies to every registry without a directory of its own.
	DefaultRegistry = "_default"
)

// Registry is one registry the agent mirrors.
type Registry struct {
	Host   string // as image references name it: docker.io, ghcr.io, registry.lan:5000, or _default
	Server string // the upstream containerd falls back to; "" = https://<host> (Docker Hub: registry-1.docker.io)
}

// ParseRegistry parses "host" or "host=server-url" (--registry).
func ParseRegistry(s string) (Registry, error) {
	host, server, _ := strings.Cut(s, "=")
	if host == "" || strings.ContainsAny(host, "/ \t") || host == "." || host == ".." {
		return Registry{}, fmt.Errorf("registry %q: want HOST[:PORT] or _default, optionally =SERVER-URL", s)
	}
	if server != "" {
		u, err := url.Parse(server)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return Registry{}, fmt.Errorf("registry %q: server %q is not an http(s) URL", s, server)
		}
	}
	if host == DefaultRegistry && server != "" {
		return Registry{}, fmt.Errorf("registry %q: _default takes no server (each image's own registry is the fallback)", s)
	}
	return Registry{Host: host, Server: server}, nil
}

// server is the hosts.toml server line's URL ("" for _default).
func (r Registry) server() string {
	switch {
	case r.Server != "":
		return r.Server
	case r.Host == DefaultRegistry:
		return ""
	case r.Host == "docker.io":
		return "https://registry-1.docker.io"
	}
	return "https://" + r.Host
}

// Options says what to set up where. Paths are as the host sees them;
// Root prefixes every one (a container mounts the host's / at e.g. /host).
type Options struct {
	Root             string
	CertsDir         string // containerd's registry config_path
	ContainerdConfig string // checked for config_path, never written
	CRIODropIn       string
	Containerd, CRIO bool   // which runtimes to configure
	Mirror           string // the agent's registry API as containerd reaches it
	Registries       []Registry
}

// ApplyDefaults fills unset paths and the mirror.
func (o *Options) ApplyDefaults() {
	if o.CertsDir == "" {
		o.CertsDir = DefaultCertsDir
	}
	if o.ContainerdConfig == "" {
		o.ContainerdConfig = DefaultContainerdConfig
	}
	if o.CRIODropIn == "" {
		o.CRIODropIn = DefaultCRIODropIn
	}
	if o.Mirror == "" {
		o.Mirror = DefaultMirror
	}
	if len(o.Registries) == 0 {
		o.Registries = []Registry{{Host: DefaultRegistry}}
	}
}

// Validate checks the mirror URL.
func (o *Options) Validate() error {
	u, err := url.Parse(o.Mirror)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("mirror %q: want http(s)://HOST:PORT, the agent's registry API", o.Mirror)
	}
	if !o.Containerd && !o.CRIO {
		return errors.New("no runtime to configure: set containerd, cri-o or both")
	}
	return nil
}

func (o *Options) path(p string) string { return filepath.Join(o.Root, p) }

// Install writes every runtime's configuration. It is idempotent: a block
// or file it wrote before is replaced.
func Install(o Options, log *slog.Logger) error {
	o.ApplyDefaults()
	if err := o.Validate(); err != nil {
		return err
	}
	if o.Containerd {
		for _, r := range o.Registries {
			p, err := installHosts(o, r)
			if err != nil {
				return fmt.Errorf("containerd: %w", err)
			}
			log.Info("containerd mirror set", "file", p, "registry", r.Host, "mirror", o.Mirror)
		}
		if msg := CheckConfigPath(o.path(o.ContainerdConfig), o.ContainerdConfig, o.CertsDir); msg != "" {
			log.Warn(msg)
		}
	}
	if o.CRIO {
		p, skipped, err := installCRIO(o)
		if err != nil {
			return fmt.Errorf("cri-o: %w", err)
		}
		for _, s := range skipped {
			log.Warn("cri-o: registry not mirrored: " + s)
		}
		log.Info("cri-o mirror drop-in written", "file", p, "mirror", o.Mirror)
	}
	return nil
}

// Uninstall removes what Install wrote and nothing else.
func Uninstall(o Options, log *slog.Logger) error {
	o.ApplyDefaults()
	if o.Containerd {
		for _, r := range o.Registries {
			p, what, err := uninstallHosts(o, r)
			if err != nil {
				return fmt.Errorf("containerd: %w", err)
			}
			if what != "" {
				log.Info("containerd mirror removed", "file", p, "registry", r.Host, "removed", what)
			}
		}
	}
	if o.CRIO {
		p := o.path(o.CRIODropIn)
		removed, err := removeOurs(p, crioMarker)
		if err != nil {
			return fmt.Errorf("cri-o: %w", err)
		}
		if removed {
			log.Info("cri-o mirror drop-in removed", "file", p)
		}
	}
	return nil
}

// writeAtomic writes data to path with mode perm (temp file + rename in
// the same directory), so containerd never reads half a file.
func writeAtomic(path string, data []byte, perm fs.FileMode) error {
	if err := fsutil.WriteFileAtomicPerm(path, data, perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// removeOurs removes path if its first line is marker; a file without it
// is the user's and stays.
func removeOurs(path, marker string) (bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(string(b), marker) {
		return false, nil
	}
	if err := os.Remove(path); err != nil {
		return false, err
	}
	return true, nil
}

// PrepareDir creates dir (a hostPath the agent caches in) and gives it to
// uid:gid, so the agent itself can run without root. A tree owned by
// someone else (an agent that ran as root before) is handed over whole.
func PrepareDir(dir string, uid, gid int) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) == uid && int(st.Gid) == gid {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}
