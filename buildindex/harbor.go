package buildindex

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-dev/shoal/internal/httpx"
	"github.com/shoal-dev/shoal/proto"
)

// Harbor's P2P preheat providers, as goharbor/harbor's
// src/pkg/p2p/preheat/provider/{dragonfly,kraken}.go send them: the
// build-index answers as a Dragonfly manager's open API and as a Kraken
// build-index, running the same preheat jobs.

// dragonflyJobRequest is the body of POST /oapi/v1/jobs.
type dragonflyJobRequest struct {
	Type string `json:"type"`
	Args struct {
		Type                string            `json:"type"`
		URL                 string            `json:"url"`
		Tag                 string            `json:"tag"`
		FilteredQueryParams string            `json:"filtered_query_params"`
		Headers             map[string]string `json:"headers"`
		Scope               string            `json:"scope"`
		ConcurrentCount     int64             `json:"concurrent_count"`
		Timeout             int64             `json:"timeout"`
	} `json:"args"`
	SchedulerClusterIDs []uint `json:"scheduler_cluster_ids"`
}

// Dragonfly's job states, which Harbor maps (PENDING -> running).
const (
	dfPending = "PENDING"
	dfSuccess = "SUCCESS"
	dfFailure = "FAILURE"
)

type dfTask struct {
	URL         string `json:"url"`
	Hostname    string `json:"hostname"`
	IP          string `json:"ip"`
	Description string `json:"description,omitempty"`
}

type dfResult struct {
	SuccessTasks       []dfTask `json:"success_tasks"`
	FailureTasks       []dfTask `json:"failure_tasks"`
	SchedulerClusterID uint     `json:"scheduler_cluster_id"`
}

type dfJobState struct {
	Error   string     `json:"error"`
	Results []dfResult `json:"results"`
}

// dragonflyJob is Dragonfly's job answer, as Harbor decodes it.
type dragonflyJob struct {
	ID        int64     `json:"id"`
	Type      string    `json:"type"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Result    struct {
		JobStates []dfJobState `json:"job_states"`
	} `json:"result"`
}

// imageFromURL turns <scheme>://<registry>/v2/<repo>/manifests/<ref> into
// registry/repo:ref (or @ref).
func imageFromURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", badField("args.url", "%q: want <registry>/v2/<repo>/manifests/<tag or digest>", raw)
	}
	p, ok := strings.CutPrefix(u.Path, "/v2/")
	i := strings.LastIndex(p, "/manifests/")
	if !ok || i <= 0 {
		return "", badField("args.url", "%q: want <registry>/v2/<repo>/manifests/<tag or digest>", raw)
	}
	repo, ref := p[:i], p[i+len("/manifests/"):]
	sep := ":"
	if strings.Contains(ref, ":") {
		sep = "@"
	}
	return u.Host + "/" + repo + sep + ref, nil
}

func (s *Server) handleDragonflyCreate(w http.ResponseWriter, r *http.Request) {
	var in dragonflyJobRequest
	if err := decodeBody(r, &in, false); err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	if in.Type != "preheat" {
		httpx.WriteError(w, r, badField("type", "%q: only \"preheat\" jobs are supported", in.Type))
		return
	}
	if in.Args.Type != "image" {
		httpx.WriteError(w, r, badField("args.type", "%q: only \"image\" is supported", in.Args.Type))
		return
	}
	image, err := imageFromURL(in.Args.URL)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	req := proto.PreheatRequest{Image: image, Concurrency: int(min(in.Args.ConcurrentCount, 100000))}
	var scope string
	switch in.Args.Scope {
	case "", "single_seed_peer", "all_seed_peers":
		scope = `"origins"`
	case "all_peers":
		scope = `"all_agents"`
	default:
		httpx.WriteError(w, r, badField("args.scope", "%q: want single_seed_peer, all_seed_peers or all_peers", in.Args.Scope))
		return
	}
	rec, err := s.checkRequest(req, []byte(scope))
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	var auth string
	for k, v := range in.Args.Headers {
		if strings.EqualFold(k, "Authorization") {
			auth = v
		}
	}
	j, err := s.preheat.create(s.runCtx(), rec, auth)
	if err != nil {
		httpx.WriteError(w, r, httpx.DiskError(err))
		return
	}
	writeJSON(w, http.StatusOK, dragonflyAnswer(j))
}

func (s *Server) handleDragonflyGet(w http.ResponseWriter, r *http.Request) {
	if j, ok := s.jobParam(w, r); ok {
		writeJSON(w, http.StatusOK, dragonflyAnswer(j))
	}
}

// dragonflyAnswer shapes a job as Dragonfly's: one job state with one
// result listing a task per node and blob.
func dragonflyAnswer(j proto.PreheatJob) dragonflyJob {
	id, _ := strconv.ParseInt(j.ID, 10, 64)
	out := dragonflyJob{ID: id, Type: "preheat", CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt}
	switch j.State {
	case proto.JobSuccess:
		out.State = dfSuccess
	case proto.JobFailure:
		out.State = dfFailure
	default:
		out.State = dfPending
	}
	res := dfResult{SuccessTasks: []dfTask{}, FailureTasks: []dfTask{}, SchedulerClusterID: 1}
	for _, n := range j.Nodes {
		host, ip := n.Node, n.Address
		if n.Role == "origin" {
			host = hostOf(n.Node)
		}
		for _, b := range j.Blobs {
			t := dfTask{URL: blobURL(j, b), Hostname: host, IP: ip}
			switch n.State {
			case proto.NodeDone:
				res.SuccessTasks = append(res.SuccessTasks, t)
			case proto.NodeError:
				t.Description = n.Error
				res.FailureTasks = append(res.FailureTasks, t)
			}
		}
	}
	out.Result.JobStates = []dfJobState{{Error: j.Error, Results: []dfResult{res}}}
	return out
}

// blobURL is the registry URL of blob b of j's image.
func blobURL(j proto.PreheatJob, b proto.PreheatBlob) string {
	reg, repo, _ := strings.Cut(j.Namespace, "/")
	kind := "blobs"
	if b.Manifest {
		kind = "manifests"
	}
	return "https://" + reg + "/v2/" + repo + "/" + kind + "/" + b.Digest.String()
}

// krakenNotification is the registry notification envelope Harbor's
// Kraken driver posts (Go field names; Id and Url as tagged by Harbor).
type krakenNotification struct {
	Events []struct {
		ID     string `json:"Id"`
		Action string
		Target *struct {
			MediaType  string
			Digest     string
			Repository string
			URL        string `json:"Url"`
			Tag        string
		}
	}
}

// handleKrakenNotify preheats the origins with every pushed image named.
func (s *Server) handleKrakenNotify(w http.ResponseWriter, r *http.Request) {
	var in krakenNotification
	if err := decodeBody(r, &in, false); err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	var recs []jobRecord
	for i, ev := range in.Events {
		if ev.Action != "push" || ev.Target == nil {
			continue
		}
		t := ev.Target
		field := "Events[" + strconv.Itoa(i) + "].Target"
		u, err := url.Parse(t.URL)
		if err != nil || u.Host == "" {
			httpx.WriteError(w, r, badField(field+".Url", "%q: want the registry URL of the image", t.URL))
			return
		}
		image := u.Host + "/" + t.Repository
		switch {
		case t.Digest != "":
			image += "@" + t.Digest
		case t.Tag != "":
			image += ":" + t.Tag
		default:
			httpx.WriteError(w, r, badField(field, "neither Digest nor Tag"))
			return
		}
		rec, err := s.checkRequest(proto.PreheatRequest{Image: image}, nil)
		if err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		recs = append(recs, rec)
	}
	for _, rec := range recs {
		if _, err := s.preheat.create(s.runCtx(), rec, ""); err != nil {
			httpx.WriteError(w, r, httpx.DiskError(err))
			return
		}
	}
	w.WriteHeader(http.StatusOK)
}
