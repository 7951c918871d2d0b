// Package agent is the per-node role: a read-only OCI registry (a mirror for
// containerd and Docker) whose blobs come from the swarm, cached locally and
// seeded back to other agents.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/shoal-dev/shoal/config"
	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/internal/inflight"
	"github.com/shoal-dev/shoal/internal/p2p"
	"github.com/shoal-dev/shoal/internal/store"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/internal/upstream"
	"github.com/shoal-dev/shoal/proto"
)

// Agent is one node's agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store
	node  *p2p.Node
	base  *httpx.Base
	tls   *tlsconf.Source // nil without [tls]
	api   *httpx.Server
	admin *httpx.Server
	meta  metainfoSource
	// swarms starts swarm downloads: node, but for tests.
	swarms swarmJoiner
	// cluster asks origins for manifests and the build-index for tags.
	cluster   *clusterClient
	manifests singleflight.Group
	seeding   singleflight.Group // ensureSeeding, by digest

	ctx    context.Context
	cancel context.CancelFunc

	pulls inflight.Group[digest.Digest, error] // pull.go
	slots chan struct{}                        // one per running download (max_downloads)

	fallbackClient *http.Client
	// up is the upstream fallback; nil without [[upstream]].
	up *upstream.Client

	requests  *prometheus.CounterVec
	fallbacks *prometheus.CounterVec
	active    prometheus.Gauge
	pullsRes  *prometheus.CounterVec
	served    prometheus.Counter
}

// New opens the cache, starts the P2P node and binds both HTTP listeners.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	st, err := store.Open(cfg.Root, log)
	if err != nil {
		return nil, config.Errorf("root", "%v", err)
	}
	tlsSrc, err := tlsconf.New(cfg.TLS, "tls", log)
	if err != nil {
		return nil, err
	}
	cfg.P2P.TLS = tlsSrc // announces to https trackers
	a := &Agent{cfg: cfg, log: log, store: st, base: httpx.NewBase(), tls: tlsSrc}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.pulls.Grace, a.pulls.Parent = cfg.PullGrace, a.ctx
	a.meta = newMetainfoClient(cfg.Trackers, cfg.P2P.Listen, tlsSrc)
	a.cluster = newClusterClient(cfg.Origins, cfg.BuildIndex, tlsSrc)
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_blob_requests_total",
		Help: "Blob requests on the registry API, by cache result (hit, miss, joined)."}, []string{"result"})
	a.pullsRes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_pulls_total",
		Help: "Swarm downloads, by result."}, []string{"result"})
	a.served = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_agent_served_bytes_total", Help: "Blob bytes sent to clients."})
	a.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_fallbacks_total",
		Help: "Downloads that left the swarm: for an origin's HTTP endpoint (reason tracker_unreachable, swarm_stalled), or for the upstream registry when every origin failed (origins_down)."}, []string{"reason"})
	a.fallbackClient = &http.Client{Transport: tlsSrc.Transport(&http.Transport{MaxIdleConnsPerHost: 4})}
	if len(cfg.Upstreams) > 0 {
		if a.up, err = upstream.New(cfg.Upstreams, cfg.DefaultUpstream, log); err != nil {
			return nil, err
		}
	}
	a.active = prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_agent_downloads_active",
		Help: "Blob downloads running now (at most max_downloads)."})
	a.slots = make(chan struct{}, cfg.MaxDownloads)
	a.base.Metrics.MustRegister(a.requests, a.pullsRes, a.served, a.fallbacks, a.active)
	a.base.Metrics.MustRegister(st.Collectors("shoal_agent")...)
	st.SetGC(cfg.CacheConfig.GC(a.stopSeeding))

	if a.node, err = p2p.NewNode(cfg.P2P, log, a.base.Metrics); err != nil {
		return nil, err
	}
	a.swarms = nodeSwarms{a.node}
	api := chi.NewRouter()
	api.Use(httpx.LogRequests(log))
	a.base.Mount(api)
	api.HandleFunc(proto.PatternV2, a.handleV2)
	api.HandleFunc(proto.PatternV2Tree, a.handleV2)
	// The registry API serves TLS only off loopback: the node's container
	// runtime speaks plain HTTP to 127.0.0.1.
	var apiTLS *tls.Config
	if ap, err := netip.ParseAddrPort(cfg.Listen); err == nil && !ap.Addr().IsLoopback() {
		apiTLS = tlsSrc.ServerConfig()
	}
	if a.api, err = httpx.ListenTLS(cfg.Listen, api, log, cfg.HTTP, apiTLS); err != nil {
		a.node.Close()
		return nil, err
	}
	admin := chi.NewRouter()
	a.base.Mount(admin)
	if a.admin, err = httpx.ListenTLS(cfg.AdminListen, admin, log, cfg.HTTP, tlsSrc.ServerConfig()); err != nil {
		a.api.Close()
		a.node.Close()
		return nil, err
	}
	return a, nil
}

// URL of the registry API.
func (a *Agent) URL() string { return a.api.URL() }

// AdminURL of the admin server.
func (a *Agent) AdminURL() string { return a.admin.URL() }

// Node is the agent's P2P node.
func (a *Agent) Node() *p2p.Node { return a.node }

// Store is the agent's blob cache.
func (a *Agent) Store() *store.Store { return a.store }

// Run serves until ctx ends, then stops every download and swarm.
func (a *Agent) Run(ctx context.Context) error {
	a.base.SetReady(true)
	go a.store.RunGC(a.ctx, store.DefaultGCInterval)
	go a.runHeartbeats(a.ctx)
	errc := make(chan error, 2)
	go func() { errc <- a.admin.Serve(ctx) }()
	// Leave the swarms as soon as asked to stop, while responses from the
	// cache drain: a stopping agent must not go on trading pieces (running
	// downloads end with it anyway).
	left := make(chan struct{})
	stop := context.AfterFunc(ctx, func() { a.cancel(); a.node.Close(); close(left) })
	err := a.api.Serve(ctx)
	if stop() {
		a.cancel() // Serve failed on its own
		a.node.Close()
	} else {
		<-left
	}
	// A pull that sent its last byte may still be committing the blob.
	a.pulls.Wait()
	return errors.Join(err, <-errc)
}

func (a *Agent) handleV2(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if p == proto.PatternV2 || p == proto.PatternV2+"/" {
		w.Header().Set(proto.HeaderAPIVersion, proto.APIVersion)
		w.Header().Set("Content-Type", proto.ContentTypeJSON)
		_, _ = w.Write([]byte("{}"))
		return
	}
	name, kind, rest, ok := splitV2(p)
	if !ok {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusNotFound, httpx.CodeNameUnknown, "no such endpoint: %s", p))
		return
	}
	if !validName(name) {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, httpx.CodeNameInvalid, "invalid repository name %q", name))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead || kind == proto.V2Uploads {
		httpx.WriteError(w, r, httpx.Errorf(http.StatusMethodNotAllowed, httpx.CodeUnsupported, "this registry is a read-only mirror: %s is not supported", r.Method))
		return
	}
	switch {
	case kind == proto.V2Blobs:
		a.handleBlob(w, r, a.namespace(r, name), rest)
	case kind == proto.V2Manifests:
		a.handleManifest(w, r, a.namespace(r, name), rest)
	case kind == proto.V2Tags && rest == "list":
		a.handleTags(w, r, name, a.namespace(r, name))
	default:
		httpx.WriteError(w, r, httpx.Errorf(http.StatusNotFound, httpx.CodeNameUnknown, "no such endpoint: %s", p))
	}
}

// namespace is the repository as the origins know it: prefixed with the
// registry host when containerd names one (?ns=ghcr.io).
func (a *Agent) namespace(r *http.Request, name string) string {
	if ns := r.URL.Query().Get(proto.QueryNamespace); ns != "" {
		return ns + "/" + name
	}
	return name
}

// stopSeeding leaves the swarms of an evicted blob: its open file would
// otherwise keep the disk space, and the agent no longer holds the blob.
func (a *Agent) stopSeeding(d digest.Digest) {
	if a.node == nil {
		return
	}
	a.node.Leave(d.String())
}

// stallCheckEvery is how often a download's progress is sampled.
const stallCheckEvery = time.Second
