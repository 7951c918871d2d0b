package nodesetup

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

const crioMarker = "# Written by shoal node-setup; `shoal node-setup --uninstall` removes this file.\n"

// crioDropIn renders the registries.conf.d drop-in (containers-registries.conf
// v2): the agent as each registry's mirror. CRI-O (containers/image) sends
// no ?ns=, so each mirror location carries the registry host as the first
// path component (127.0.0.1:7650/ghcr.io): the agent reads a repository
// whose first component looks like a host as that registry's. A host with
// a port cannot be a path component (OCI name grammar), nor can _default be
// expressed: those are returned as skipped, with the reason.
func crioDropIn(o Options) (body string, skipped []string, err error) {
	u, err := url.Parse(o.Mirror)
	if err != nil {
		return "", nil, err
	}
	var b strings.Builder
	b.WriteString(crioMarker)
	b.WriteString("# The node's Shoal agent mirrors these registries; CRI-O falls back to each registry itself.\n")
	n := 0
	for _, r := range o.Registries {
		switch {
		case r.Host == DefaultRegistry:
			skipped = append(skipped, "_default: registries.conf has no catch-all prefix; list the registries with --registry")
			continue
		case strings.Contains(r.Host, ":"):
			skipped = append(skipped, r.Host+": a host with a port cannot be named in the mirror's path")
			continue
		}
		location := r.Host
		if r.Server != "" {
			su, _ := url.Parse(r.Server)
			location = su.Host
		}
		fmt.Fprintf(&b, "\n[[registry]]\nprefix = %q\nlocation = %q\n", r.Host, location)
		fmt.Fprintf(&b, "\n[[registry.mirror]]\nlocation = %q\ninsecure = %t\n", u.Host+"/"+r.Host, u.Scheme == "http")
		n++
	}
	if n == 0 {
		return "", skipped, fmt.Errorf("no registry can be mirrored for CRI-O (%s)", strings.Join(skipped, "; "))
	}
	return b.String(), skipped, nil
}

func installCRIO(o Options) (string, []string, error) {
	p := o.path(o.CRIODropIn)
	body, skipped, err := crioDropIn(o)
	if err != nil {
		return p, skipped, err
	}
	if b, err := os.ReadFile(p); err == nil && !strings.HasPrefix(string(b), crioMarker) {
		return p, skipped, fmt.Errorf("%s exists and was not written by node-setup: left as it is", p)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return p, skipped, err
	}
	return p, skipped, writeAtomic(p, []byte(body), 0o644)
}
