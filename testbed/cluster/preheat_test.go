package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/shoal-dev/shoal/buildindex"
	"github.com/shoal-dev/shoal/internal/testutil"
	"github.com/shoal-dev/shoal/proto"
	"github.com/shoal-dev/shoal/testbed/localregistry"
)

const adminToken = "preheat-admin-token"

// dfJob is what Harbor's Dragonfly driver decodes from a job answer.
type dfJob struct {
	ID     int    `json:"id"`
	State  string `json:"state"`
	Result struct {
		JobStates []struct {
			Error   string `json:"error"`
			Results []struct {
				SuccessTasks []*struct {
					URL, Hostname, IP string
				} `json:"success_tasks"`
				FailureTasks []*struct {
					URL, Hostname, IP, Description string
				} `json:"failure_tasks"`
				SchedulerClusterID uint `json:"scheduler_cluster_id"`
			} `json:"results"`
		} `json:"job_states"`
	} `json:"result"`
}

// harborPayload is the body Harbor's Dragonfly driver posts (its
// dragonflyCreateJobRequest, fields in its order).
func harborPayload(registryURL, repo, tag, scope, auth string) []byte {
	headers := map[string]string{}
	if auth != "" {
		headers["Authorization"] = auth
	}
	h, _ := json.Marshal(headers)
	return []byte(fmt.Sprintf(`{"type":"preheat","args":{"type":"image","url":"%s/v2/%s/manifests/%s","tag":"","filtered_query_params":"","headers":%s,"scope":"%s","concurrent_count":0,"timeout":0},"scheduler_cluster_ids":[1]}`,
		registryURL, repo, tag, h, scope))
}

// harborDo sends a request the way Harbor's provider client does in the
// "basic" auth mode (the admin token as password).
func harborDo(t *testing.T, method, u string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("harbor", adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// waitAgents waits until n agents heartbeat to the cluster's build-index.
func waitAgents(t *testing.T, c *Cluster, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(c.BuildIndex.Agents()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d agents heartbeat after 30s: %v", len(c.BuildIndex.Agents()), n, c.BuildIndex.Agents())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitDragonfly polls a Dragonfly job until it leaves PENDING.
func waitDragonfly(t *testing.T, c *Cluster, id int) (dfJob, []byte) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		status, body := harborDo(t, http.MethodGet, fmt.Sprintf("%s/oapi/v1/jobs/%d", c.BuildIndex.URL(), id), nil)
		if status != http.StatusOK {
			t.Fatalf("GET job %d: %d %s", id, status, body)
		}
		var j dfJob
		if err := json.Unmarshal(body, &j); err != nil {
			t.Fatalf("job answer %s: %v", body, err)
		}
		if j.State != "PENDING" {
			return j, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still PENDING after 2m: %s", id, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func createDragonfly(t *testing.T, c *Cluster, payload []byte) int {
	t.Helper()
	status, body := harborDo(t, http.MethodPost, c.BuildIndex.URL()+"/oapi/v1/jobs", payload)
	if status != http.StatusOK {
		t.Fatalf("POST /oapi/v1/jobs: %d %s", status, body)
	}
	var j dfJob
	if err := json.Unmarshal(body, &j); err != nil || j.ID == 0 || j.State != "PENDING" {
		t.Fatalf("create answer %s: %v", body, err)
	}
	return j.ID
}

// imageBlobs lists the config and layers of img.
func imageBlobs(t *testing.T, img v1.Image) []digest.Digest {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		out = append(out, digest.Digest(l.Digest.String()))
	}
	return out
}

func preheatCluster(t *testing.T, agents int, opts Options) *Cluster {
	opts.Agents, opts.Origins = agents, 2
	opts.BuildIndexConfig = func(bc *buildindex.Config) { bc.AdminToken = adminToken }
	return startCluster(t, opts)
}

// TestHarborDragonflyPreheatsAllPeers drives Harbor's exact Dragonfly
// payload with all_peers: the job reaches SUCCESS, every agent holds every
// blob, and a pull on each agent then starts no download.
func TestHarborDragonflyPreheatsAllPeers(t *testing.T) {
	const agents = 4
	c := preheatCluster(t, agents, Options{})
	img, err := localregistry.SampleImage(3, 1<<20, 7)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Registry.Push(ctx, "harbor/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	waitAgents(t, c, agents)

	id := createDragonfly(t, c, harborPayload(c.Registry.URL(), "harbor/app", "v1", "all_peers", ""))
	j, body := waitDragonfly(t, c, id)
	if j.State != "SUCCESS" {
		t.Fatalf("job ended %s: %s", j.State, body)
	}
	blobs := imageBlobs(t, img)
	if n := len(j.Result.JobStates[0].Results[0].SuccessTasks); n < agents*len(blobs) {
		t.Errorf("%d success tasks, want at least %d: %s", n, agents*len(blobs), body)
	}
	for d := range blobs {
		_ = d
	}
	for _, d := range blobs {
		if n := c.Registry.BlobGets(d.String()); n != 1 {
			t.Errorf("upstream saw %d GETs of %s, want 1", n, d)
		}
	}
	for i, a := range c.Agents {
		for _, d := range blobs {
			if _, err := a.Store().Stat(d); err != nil {
				t.Errorf("agent %d: blob %s not committed: %v", i, d, err)
			}
		}
		before := metricLine(t, a.AdminURL(), "shoal_agent_pulls_total")
		for _, d := range blobs {
			b, resp, err := get(ctx, a.URL()+"/v2/harbor/app/blobs/"+d.String())
			if err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(b) != d {
				t.Fatalf("agent %d: pull %s: %v", i, d, err)
			}
		}
		if after := metricLine(t, a.AdminURL(), "shoal_agent_pulls_total"); after != before {
			t.Errorf("agent %d: pulls after the preheat started downloads: %s -> %s", i, before, after)
		}
		if hits := metricLine(t, a.AdminURL(), `shoal_agent_blob_requests_total{result="hit"}`); !strings.HasSuffix(hits, fmt.Sprint(len(blobs))) {
			t.Errorf("agent %d: cache hits %s, want %d", i, hits, len(blobs))
		}
	}
	t.Logf("preheat of %d blobs onto %d agents: origins sent %d piece bytes", len(blobs), agents, c.Origins[0].BytesSent()+c.Origins[1].BytesSent())

	t.Run("missing tag fails", func(t *testing.T) {
		id := createDragonfly(t, c, harborPayload(c.Registry.URL(), "harbor/app", "nope", "all_peers", ""))
		j, body := waitDragonfly(t, c, id)
		if j.State != "FAILURE" || len(j.Result.JobStates) != 1 || !strings.Contains(j.Result.JobStates[0].Error, "nope") {
			t.Fatalf("want FAILURE naming the tag in job_states[].error: %s", body)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for _, tc := range []struct{ body, field string }{
			{`{"image":"` + c.UpstreamHost + `/harbor/app:v1","scope":"everyone"}`, "scope"},
			{`{"image":"` + c.UpstreamHost + `/harbor/app:v1","scope":{"percentage":0}}`, "scope"},
			{`{"image":"` + c.UpstreamHost + `/harbor/app:v1","pin":"forever"}`, "pin"},
			{`{"scope":"origins"}`, "image"},
			{`{"image":"` + c.UpstreamHost + `/harbor/app:v1","platforms":["linux"]}`, "platforms[0]"},
			{`{"image":"x","color":"red"}`, "color"},
		} {
			status, body := harborDo(t, http.MethodPost, c.BuildIndex.URL()+"/v1/preheat", []byte(tc.body))
			if status != http.StatusBadRequest || !strings.Contains(string(body), tc.field) || !strings.Contains(string(body), `"errors"`) {
				t.Errorf("%s: %d %s, want 400 naming %s", tc.body, status, body, tc.field)
			}
		}
		for _, auth := range []string{"", "Bearer wrong", "Basic aGFyYm9yOndyb25n"} {
			req, _ := http.NewRequest(http.MethodPost, c.BuildIndex.URL()+"/v1/preheat", strings.NewReader(`{"image":"a/b:c"}`))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("auth %q: %d, want 401", auth, resp.StatusCode)
			}
		}
		// Harbor's custom-header and bearer modes are accepted.
		for _, h := range [][2]string{{"Authorization", "Bearer " + adminToken}, {buildindex.DefaultAdminHeader, adminToken}} {
			req, _ := http.NewRequest(http.MethodGet, c.BuildIndex.URL()+"/oapi/v1/jobs/1", nil)
			req.Header.Set(h[0], h[1])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: %d, want 200", h[0], resp.StatusCode)
			}
		}
	})
}

// TestHarborKrakenNotificationWarmsOrigins posts the notification Harbor's
// Kraken driver sends: the origins then hold every blob, each fetched once.
func TestHarborKrakenNotificationWarmsOrigins(t *testing.T) {
	c := preheatCluster(t, 1, Options{})
	img, err := localregistry.SampleImage(3, 512<<10, 9)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := c.Registry.Push(context.Background(), "harbor/kraken", "v2", img)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := img.Digest()
	_ = ref
	payload := fmt.Sprintf(`{"Events":[{"Id":"abc123","TimeStamp":"%s","Action":"push","Target":{"MediaType":"application/vnd.docker.distribution.manifest.v2+json","Digest":"%s","Repository":"harbor/kraken","Url":"%s/v2/harbor/kraken/manifests/v2","Tag":"v2"},"Request":null,"Actor":null}]}`,
		time.Now().UTC().Format(time.RFC3339Nano), md, c.Registry.URL())
	if status, body := harborDo(t, http.MethodPost, c.BuildIndex.URL()+"/registry/notifications", []byte(payload)); status != http.StatusOK {
		t.Fatalf("notification: %d %s", status, body)
	}
	if status, _ := harborDo(t, http.MethodGet, c.BuildIndex.URL()+"/health", nil); status != http.StatusOK {
		t.Fatalf("/health: %d", status)
	}
	j, body := waitDragonfly(t, c, 1)
	if j.State != "SUCCESS" {
		t.Fatalf("job: %s", body)
	}
	for _, d := range imageBlobs(t, img) {
		held := 0
		for _, o := range c.Origins {
			if _, err := o.Store().Stat(d); err == nil {
				held++
			}
		}
		if held != 1 {
			t.Errorf("blob %s on %d origins, want its owner", d, held)
		}
		if n := c.Registry.BlobGets(d.String()); n != 1 {
			t.Errorf("upstream saw %d GETs of %s, want 1", n, d)
		}
	}
}

// TestPreheatWithHarborBearerToken: the upstream accepts only a token;
// the origins have no credentials. The token given in the job's headers
// reaches the upstream, and shows in no log, metric, job answer or file.
func TestPreheatWithHarborBearerToken(t *testing.T) {
	const user, pass = "harbor-robot", "robot-pass"
	ts := testutil.StartTokenServer(t, "shoal-test-issuer", "shoal-test-registry", map[string]string{user: pass})
	reg, err := localregistry.StartWithOptions(t.TempDir(), "127.0.0.1:0", localregistry.Options{Auth: configuration.Auth{
		"token": configuration.Parameters{"realm": ts.Realm(), "service": "shoal-test-registry",
			"issuer": "shoal-test-issuer", "rootcertbundle": ts.RootBundle(t)},
	}}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	go func() { _ = reg.Serve(rctx) }()
	t.Cleanup(rcancel)

	img, err := localregistry.SampleImage(2, 512<<10, 11)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(reg.Host()+"/private/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		t.Fatal(err)
	}
	// The token Harbor would hand its provider: pull scope on the repository.
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/token?service=shoal-test-registry&scope=repository:private/app:pull", nil)
	req.SetBasicAuth(user, pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || tok.Token == "" {
		t.Fatalf("token: %v", err)
	}

	var logs testutil.LogBuffer
	c := preheatCluster(t, 2, Options{UpstreamURL: reg.URL(), Log: logs.Logger()})
	waitAgents(t, c, 2)

	// Without the token the origins cannot fetch.
	id := createDragonfly(t, c, harborPayload(reg.URL(), "private/app", "v1", "single_seed_peer", ""))
	if j, body := waitDragonfly(t, c, id); j.State != "FAILURE" {
		t.Fatalf("a job without credentials: %s", body)
	}
	id = createDragonfly(t, c, harborPayload(reg.URL(), "private/app", "v1", "all_peers", "Bearer "+tok.Token))
	j, body := waitDragonfly(t, c, id)
	if j.State != "SUCCESS" {
		t.Fatalf("job with the token: %s", body)
	}
	for i, a := range c.Agents {
		for _, d := range imageBlobs(t, img) {
			if _, err := a.Store().Stat(d); err != nil {
				t.Errorf("agent %d: blob %s: %v", i, d, err)
			}
		}
	}
	secret := tok.Token
	sig := secret[strings.LastIndex(secret, ".")+1:]
	leaks := func(where, s string) {
		if strings.Contains(s, secret) || strings.Contains(s, sig) {
			t.Errorf("the token appears in %s", where)
		}
	}
	leaks("a job answer", string(body))
	_, native := harborDo(t, http.MethodGet, fmt.Sprintf("%s/v1/preheat/%d", c.BuildIndex.URL(), id), nil)
	leaks("a job answer", string(native))
	leaks("the logs", logs.String())
	for _, u := range []string{c.BuildIndex.URL(), c.Tracker.URL(), c.Origins[0].URL(), c.Origins[1].URL(), c.Agents[0].AdminURL(), c.Agents[1].AdminURL()} {
		b, _, err := get(context.Background(), u+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		leaks("the metrics of "+u, string(b))
	}
	_ = filepath.WalkDir(c.biCfg.Root, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := os.ReadFile(p)
			leaks("the file "+p, string(b))
		}
		return nil
	})
	if !strings.Contains(logs.String(), "preheat job finished") {
		t.Error("the logs were not captured")
	}
}

// TestPreheatJobsSurviveARestart: a job finished before a restart still
// answers after it; a job the build-index had not finished (its file left
// RUNNING) resumes and finishes.
func TestPreheatJobsSurviveARestart(t *testing.T) {
	c := preheatCluster(t, 2, Options{})
	img, err := localregistry.SampleImage(2, 256<<10, 13)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Registry.Push(context.Background(), "restart/app", "v1", img); err != nil {
		t.Fatal(err)
	}
	waitAgents(t, c, 2)
	pc := proto.PreheatClient{Token: adminToken}
	ctx := context.Background()
	image := c.UpstreamHost + "/restart/app:v1"
	id, err := pc.Create(ctx, c.BuildIndex.URL(), proto.PreheatRequest{Image: image, Scope: proto.Scope{Kind: proto.ScopeOrigins}, Pin: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.RestartBuildIndex(); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, pc, c, id)
	if j.State != proto.JobSuccess {
		t.Fatalf("job %s after a restart: %+v", id, j)
	}
	// A job the build-index stopped in the middle of.
	c.Stop(c.BuildIndex)
	rec := map[string]any{"id": "41", "image": image, "namespace": c.UpstreamHost + "/restart/app", "scope": "all_agents",
		"state": proto.JobRunning, "created_at": time.Now().UTC(), "updated_at": time.Now().UTC(), "nodes": []any{}, "concurrency": 1}
	b, _ := json.Marshal(rec)
	if err := os.WriteFile(filepath.Join(c.biCfg.Root, "preheat", "41.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RestartBuildIndex(); err != nil {
		t.Fatal(err)
	}
	waitAgents(t, c, 2)
	j = waitJob(t, pc, c, "41")
	if j.State != proto.JobSuccess || len(j.Nodes) < 3 {
		t.Fatalf("resumed job: %+v", j)
	}
	for i, a := range c.Agents {
		for _, d := range imageBlobs(t, img) {
			if _, err := a.Store().Stat(d); err != nil {
				t.Errorf("agent %d: %s: %v", i, d, err)
			}
		}
	}
	// Pins were kept beside the blobs on the origins.
	for _, d := range imageBlobs(t, img) {
		pinned := false
		for _, o := range c.Origins {
			pinned = pinned || o.Store().PinnedUntil(d).After(time.Now().Add(50*time.Minute))
		}
		if !pinned {
			t.Errorf("blob %s is not pinned on its origin", d)
		}
	}
	if next, err := pc.Create(ctx, c.BuildIndex.URL(), proto.PreheatRequest{Image: image}); err != nil || next != "42" {
		t.Errorf("next job id %q (%v), want 42", next, err)
	}
}

func waitJob(t *testing.T, pc proto.PreheatClient, c *Cluster, id string) proto.PreheatJob {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		j, err := pc.Job(context.Background(), c.BuildIndex.URL(), id)
		if err == nil && j.Finished() {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not finished after 2m: %+v %v", id, j, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
