package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoal-dev/shoal/agent"
	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/internal/tlsconf"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

// clusterIPs are every address a cluster's servers listen on.
func clusterIPs(agents, origins int) []string {
	ips := []string{"127.0.0.1", "localhost"}
	for i := range origins {
		ips = append(ips, OriginIP(i))
	}
	for i := range agents {
		ips = append(ips, AgentIP(i))
	}
	return ips
}

// tlsFiles is one certificate, key and CA bundle on disk, shared by every
// component of a cluster (as one mounted Secret would be).
type tlsFiles struct{ cert, key, ca string }

func newTLSFiles(t *testing.T, leaf *testutil.Leaf, cas ...*testutil.CA) tlsFiles {
	dir := t.TempDir()
	f := tlsFiles{filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")}
	f.install(t, leaf, cas...)
	return f
}

// install replaces the files as a rotation does: CA bundle first, then key
// and certificate, each atomically.
func (f tlsFiles) install(t *testing.T, leaf *testutil.Leaf, cas ...*testutil.CA) {
	var bundle []byte
	for _, c := range cas {
		bundle = append(bundle, c.PEM()...)
	}
	testutil.WriteFileAtomic(t, f.ca, bundle)
	testutil.WriteFileAtomic(t, f.key, leaf.KeyPEM)
	testutil.WriteFileAtomic(t, f.cert, leaf.CertPEM)
}

func (f tlsFiles) config() tlsconf.Config {
	return tlsconf.Config{Cert: f.cert, Key: f.key, CA: f.ca, MTLS: true, ReloadInterval: 200 * time.Millisecond}
}

// httpsClient presents leaf (nil: no certificate) and trusts ca.
func httpsClient(ca *testutil.CA, leaf *testutil.Leaf) *http.Client {
	pool := tlsPool(ca)
	cfg := &tls.Config{RootCAs: pool}
	if leaf != nil {
		cert, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
		if err != nil {
			panic(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
}

// pullImage pulls repo:tag through agent a by tag and reads every layer;
// go-containerregistry checks each digest as it reads.
func pullImage(ctx context.Context, a *agent.Agent, repo, tag string, want string) error {
	ref, err := name.ParseReference(strings.TrimPrefix(a.URL(), "http://")+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("manifest by tag: %w", err)
	}
	if d, err := img.Digest(); err != nil || d.String() != want {
		return fmt.Errorf("image digest %v (%v), want %s", d, err, want)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
	}
	return nil
}

// A whole cluster with mutual TLS between every component: pulls by tag
// through every agent verify, through the swarm (so announces reach the
// tracker over TLS), tags come from the build-index; a client without a
// certificate, or with one from another CA, is refused by every server;
// certificates and CA rotated mid-run are picked up without a restart.
func TestClusterOverMutualTLS(t *testing.T) {
	const agents, origins = 3, 2
	ca, evil, next := testutil.NewCA(t, "shoal-ca"), testutil.NewCA(t, "evil-ca"), testutil.NewCA(t, "shoal-ca-2")
	leaf := ca.Issue(append([]string{"shoal"}, clusterIPs(agents, origins)...)...)
	files := newTLSFiles(t, leaf, ca)
	// With an admin token set, a verified client certificate is the other
	// way in (the cluster's components hold no token).
	c := startCluster(t, Options{Agents: agents, Origins: origins, PieceLength: 1 << 20,
		TLS:              func(string, int) tlsconf.Config { return files.config() },
		BuildIndexConfig: func(bc *buildindex.Config) { bc.AdminToken = "not-sent-by-anyone" }})
	for _, u := range []string{c.Tracker.URL(), c.Origins[0].URL(), c.BuildIndex.URL(), c.Agents[0].AdminURL()} {
		if !strings.HasPrefix(u, "https://") {
			t.Fatalf("%s: want https", u)
		}
	}
	if strings.HasPrefix(c.Agents[0].URL(), "https://") {
		t.Fatalf("agent registry API on loopback %s: want plain HTTP for the container runtime", c.Agents[0].URL())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pullAll := func(repo string, seed uint64) {
		t.Helper()
		img, err := localregistry.SampleImage(3, 4<<20, seed)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Registry.Push(ctx, repo, "v1", img); err != nil {
			t.Fatal(err)
		}
		want, _ := img.Digest()
		start := time.Now()
		var wg sync.WaitGroup
		errs := make([]error, len(c.Agents))
		for i, a := range c.Agents {
			wg.Go(func() { errs[i] = pullImage(ctx, a, repo, "v1", want.String()) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("agent %d: pull %s:v1: %v", i, repo, err)
			}
		}
		t.Logf("%s:v1 (3 x 4 MiB) pulled by tag through %d agents over mTLS in %s", repo, len(c.Agents), time.Since(start).Round(time.Millisecond))
	}
	pullAll("test/tls", 81)
	var swarm int64
	for _, a := range c.Agents {
		swarm += a.Node().BytesFromOrigins() + a.Node().BytesFromPeers()
	}
	var httpSent int64
	for _, o := range c.Origins {
		httpSent += o.BytesSentHTTP()
	}
	if swarm < 3*agents*(4<<20) || httpSent != 0 {
		t.Errorf("the layers came %d bytes through the swarm and %d over the origins' HTTP fallback: announces over TLS did not work", swarm, httpSent)
	}

	// Every server refuses a client without a certificate, and one whose
	// certificate another CA signed; the cluster's own certificate passes.
	servers := map[string]string{"tracker": c.Tracker.URL(), "origin": c.Origins[1].URL(),
		"buildindex": c.BuildIndex.URL(), "agent admin": c.Agents[2].AdminURL()}
	for role, u := range servers {
		if resp, err := httpsClient(ca, leaf).Get(u + "/health"); err != nil || resp.StatusCode != 200 {
			t.Errorf("%s with the cluster's certificate: %v %v", role, resp, err)
		} else {
			resp.Body.Close()
		}
		for what, cl := range map[string]*http.Client{"no certificate": httpsClient(ca, nil), "another CA's certificate": httpsClient(ca, evil.Issue("intruder"))} {
			if resp, err := cl.Get(u + "/health"); err == nil {
				resp.Body.Close()
				t.Errorf("%s served a client with %s: %s", role, what, resp.Status)
			}
		}
	}

	// A write to the build-index: the cluster's client certificate is an
	// admin identity (no bearer token needed under mutual TLS).
	put, _ := http.NewRequestWithContext(ctx, http.MethodPut, c.BuildIndex.URL()+"/namespace/"+url.PathEscape("test/tls")+"/tags/pinned",
		strings.NewReader(`{"digest":"sha256:`+strings.Repeat("a", 64)+`","media_type":"application/vnd.oci.image.manifest.v1+json","size":10}`))
	put.Header.Set("Content-Type", "application/json")
	if resp, err := httpsClient(ca, leaf).Do(put); err != nil || resp.StatusCode/100 != 2 {
		t.Errorf("PUT a tag with the cluster's client certificate: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A preheat job onto every agent, created with the client certificate
	// alone: the agents' heartbeats reach the build-index over mTLS and
	// every agent ends up holding the image's blobs.
	img, err := localregistry.SampleImage(2, 1<<20, 83)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.Push(ctx, "test/tls-preheat", "v1", img); err != nil {
		t.Fatal(err)
	}
	pc := proto.PreheatClient{Client: proto.Client{HTTP: httpsClient(ca, leaf)}}
	id, err := pc.Create(ctx, c.BuildIndex.URL(), proto.PreheatRequest{Image: c.UpstreamHost + "/test/tls-preheat:v1",
		Scope: proto.Scope{Kind: proto.ScopeAllAgents}})
	if err != nil {
		t.Fatalf("create a preheat job with the client certificate: %v", err)
	}
	var job proto.PreheatJob
	testutil.Eventually(t, time.Minute, func() bool {
		job, err = pc.Job(ctx, c.BuildIndex.URL(), id)
		return err == nil && job.Finished()
	}, "preheat job %s did not finish within a minute", id)
	if job.State != proto.JobSuccess || len(job.Nodes) < agents {
		t.Errorf("preheat over mTLS: %s, %d nodes, %s", job.State, len(job.Nodes), job.Error)
	}
	if _, err := (proto.PreheatClient{Client: proto.Client{HTTP: httpsClient(ca, nil)}}).Job(ctx, c.BuildIndex.URL(), id); err == nil {
		t.Error("a client without a certificate read a preheat job")
	}

	// Rotation: a bundle of both CAs, then a certificate from the new CA.
	// Every server presents it once its files are re-read, and pulls go on.
	rotated := next.Issue(append([]string{"shoal"}, clusterIPs(agents, origins)...)...)
	files.install(t, rotated, ca, next)
	want := rotated.Cert.SerialNumber.String()
	for role, u := range servers {
		testutil.Eventually(t, 20*time.Second, func() bool {
			return servedSerial(u, next, rotated) == want
		}, "%s still presents the old certificate", role)
	}
	pullAll("test/tls-rotated", 82)
}

// servedSerial is the serial of the certificate the server at u presents
// to a client with leaf, trusting ca ("" when the handshake fails).
func servedSerial(u string, ca *testutil.CA, leaf *testutil.Leaf) string {
	resp, err := httpsClient(ca, leaf).Get(u + "/health")
	if err != nil {
		return ""
	}
	resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber.String()
}

// An agent that cannot verify the origins' certificate (another CA signed
// it) cannot pull from them, and the client gets a clear error.
func TestAgentRefusesAnOriginItCannotVerify(t *testing.T) {
	ca, evil := testutil.NewCA(t, "shoal-ca"), testutil.NewCA(t, "evil-ca")
	ips := clusterIPs(1, 1)
	good := newTLSFiles(t, ca.Issue(append([]string{"shoal"}, ips...)...), ca)
	bad := newTLSFiles(t, evil.Issue(append([]string{"origin"}, ips...)...), ca)
	c := startCluster(t, Options{Agents: 1, Origins: 1, TLS: func(role string, _ int) tlsconf.Config {
		if role == "origin" {
			cfg := bad.config()
			cfg.MTLS = false
			return cfg
		}
		return good.config()
	}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d, err := c.Registry.PushBlob(ctx, "test/unverified", localregistry.RandomBytes(1<<20, 83))
	if err != nil {
		t.Fatal(err)
	}
	status, code, msg := ociError(t, ctx, fmt.Sprintf("%s/v2/test/unverified/blobs/%s", c.Agents[0].URL(), d))
	t.Logf("blob through an origin nobody can verify: %d %s %q", status, code, msg)
	if status < 500 {
		t.Fatalf("want a 5xx, got %d %s %q", status, code, msg)
	}
	if !strings.Contains(msg, "certificate signed by unknown authority") {
		t.Errorf("the error does not say the certificate could not be verified: %q", msg)
	}
	// The agent asks the origins itself for manifests.
	status, code, msg = ociError(t, ctx, fmt.Sprintf("%s/v2/test/unverified/manifests/%s", c.Agents[0].URL(), d))
	t.Logf("manifest from an origin the agent cannot verify: %d %s %q", status, code, msg)
	if status < 500 || !strings.Contains(msg, "certificate signed by unknown authority") {
		t.Errorf("want a 5xx saying the certificate could not be verified, got %d %s %q", status, code, msg)
	}
}

func tlsPool(ca *testutil.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(ca.PEM())
	return p
}
