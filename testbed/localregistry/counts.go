package localregistry

import (
	"net/http"
	"regexp"
	"sync"
)

var manifestPath = regexp.MustCompile(`^/v2/.+/manifests/([^/]+)$`)

// manifestCounts counts the manifest requests a registry answers, by method
// and reference (tag or digest), so tests can check that coalescing and
// caching keep them off the upstream.
type manifestCounts struct {
	mu sync.Mutex
	n  map[string]int // method + " " + ref
}

func (c *manifestCounts) observe(req *http.Request) {
	m := manifestPath.FindStringSubmatch(req.URL.Path)
	if m == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[req.Method+" "+m[1]]++
}

func (c *manifestCounts) get(method, ref string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[method+" "+ref]
}

func (c *manifestCounts) reset() {
	c.mu.Lock()
	c.n = nil
	c.mu.Unlock()
}

// ManifestGets returns how many times manifest ref (a tag or a digest) was
// fetched with GET, in any repository.
func (r *Registry) ManifestGets(ref string) int { return r.manifests.get(http.MethodGet, ref) }

// ManifestHeads returns how many times manifest ref was asked with HEAD.
func (r *Registry) ManifestHeads(ref string) int { return r.manifests.get(http.MethodHead, ref) }
