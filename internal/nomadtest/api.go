package nomadtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The job and node API, shaped like Nomad 2.0.5's answers in
// testdata/nomad-2.0.5 (GET /v1/agent/self, /v1/node/:id, /v1/jobs,
// /v1/job/:id, /v1/job/:id/versions), kept small: what prefetch's discovery
// reads; parsing and registering over HTTP are in jobs.go. Registering, stopping and purging a job publishes the Job events a
// real server does (JobRegistered; JobDeregistered with Stop, then with
// Deleted on a purge), at the index the API then reports. The job list and
// job reads answer as transcript C recorded (conform_api_test.go replays
// it): ?meta=true, blocking lists, the X-Nomad-Index of a list, a job and a
// missing job, and 403 `Permission denied` as E did. Not recorded, and so
// assumptions: /v1/agent/self, /v1/node/:id and /v1/job/:id/versions send
// the latest raft index as X-Nomad-Index and no X-Nomad-Knownleader;
// /v1/node/:id's 404 text; the versions endpoint's 404.

// apiState is the fake cluster's node and jobs.
type apiState struct {
	mu     sync.Mutex
	nodeID string
	node   map[string]any
	// others are more nodes of the cluster (AddNode), by ID: what
	// /v1/node/:id answers for agents given their node_id.
	others map[string]map[string]any
	jobs   map[string]map[string]any // "namespace/id" → the job, as Nomad encodes it
	hist   map[string][]map[string]any
	// index is the jobs table's index, its last write in any namespace
	// (what a job list and a missing job answer as X-Nomad-Index, C);
	// nsIndex is each namespace's last write (what wakes a blocking list
	// of that namespace, C).
	index   uint64
	nsIndex map[string]uint64
	// allocs are every node's allocations by ID (allocs.go), allocIndex
	// the allocations table's last write.
	allocs     map[string]map[string]any
	allocIndex uint64
	// submissions are the last registration's Submission of each job, by
	// "namespace/id" (jobs.go).
	submissions map[string]map[string]any
	// parses are the answers AddParse and AddParseError registered
	// (jobs.go).
	parses map[parseKey]parsed
	// held, while set (HoldJobReads), holds each GET /v1/job/:id until it
	// is closed, and says on waiting that one is held.
	held    chan struct{}
	waiting chan string
}

func (s *Server) api() *apiState {
	s.apiOnce.Do(func() {
		s.apiS = &apiState{jobs: map[string]map[string]any{}, hist: map[string][]map[string]any{}, nsIndex: map[string]uint64{}}
	})
	return s.apiS
}

func (s *Server) routeAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/agent/self", s.guard(s.agentSelf))
	mux.HandleFunc("GET /v1/node/{id}", s.guard(s.nodeInfo))
	mux.HandleFunc("GET /v1/node/{id}/allocations", s.guard(s.nodeAllocations))
	mux.HandleFunc("GET /v1/allocation/{id}", s.guard(s.allocation))
	mux.HandleFunc("GET /v1/jobs", s.guard(s.jobList))
	mux.HandleFunc("GET /v1/job/{id}", s.guard(s.jobInfo))
	mux.HandleFunc("GET /v1/job/{id}/versions", s.guard(s.jobVersions))
	mux.HandleFunc("GET /v1/service/{name}", s.guard(s.service))
	for _, m := range []string{"PUT", "POST"} { // Nomad takes either (jobs.go)
		mux.HandleFunc(m+" /v1/jobs", s.guard(s.jobRegister))
		mux.HandleFunc(m+" /v1/jobs/parse", s.guard(s.jobParse))
	}
}

// SetNode makes node (a /v1/node/:id answer, decoded) this agent's node.
func (s *Server) SetNode(node map[string]any) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.node, a.nodeID = node, fmt.Sprint(node["ID"])
}

// RegisterJob registers job (a /v1/job/:id answer, decoded; its Namespace
// defaults to "default") as a new version, publishes JobRegistered and
// returns its index.
func (s *Server) RegisterJob(job map[string]any) uint64 {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	return s.registerLocked(job)
}

// registerLocked is RegisterJob with a.mu held (the HTTP registration
// checks EnforceIndex under the same lock).
func (s *Server) registerLocked(job map[string]any) uint64 {
	a := s.api()
	job = Clone(job)
	if ns, _ := job["Namespace"].(string); ns == "" {
		job["Namespace"] = "default"
	}
	key := fmt.Sprintf("%s/%s", job["Namespace"], job["ID"])
	s.mu.Lock()
	index := s.nextIndex
	s.mu.Unlock()
	version, created := 0, any(index)
	if prev, ok := a.jobs[key]; ok {
		// A new version keeps the job's CreateIndex (job-web-versions.json:
		// 158 for versions 0 and 1).
		version, created = int(toFloat(prev["Version"]))+1, prev["CreateIndex"]
	}
	job["CreateIndex"] = created
	job["Version"], job["Stop"], job["ModifyIndex"], job["JobModifyIndex"] = version, false, index, index
	a.jobs[key] = job
	a.hist[key] = append(a.hist[key], Clone(job))
	return a.wrote(job, s.publishJob("JobRegistered", job, false))
}

// wrote records a write of job at index in the jobs table (a.mu held).
func (a *apiState) wrote(job map[string]any, index uint64) uint64 {
	a.index = index
	a.nsIndex[fmt.Sprint(job["Namespace"])] = index
	return index
}

// StopJob marks the job stopped and publishes its JobDeregistered.
func (s *Server) StopJob(namespace, id string) uint64 {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	job, ok := a.jobs[namespace+"/"+id]
	if !ok {
		panic("nomadtest: StopJob of an unknown job " + namespace + "/" + id)
	}
	s.mu.Lock()
	index := s.nextIndex
	s.mu.Unlock()
	// B1: the stop is a new version, and its index the job's ModifyIndex
	// and JobModifyIndex (108 for both in the stop's frame).
	job["Stop"] = true
	job["Version"] = int(toFloat(job["Version"])) + 1
	job["ModifyIndex"], job["JobModifyIndex"] = index, index
	return a.wrote(job, s.publishJob("JobDeregistered", job, false))
}

// PurgeJob deletes the job and publishes the JobDeregistered that says so.
func (s *Server) PurgeJob(namespace, id string) uint64 {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	key := namespace + "/" + id
	job, ok := a.jobs[key]
	if !ok {
		panic("nomadtest: PurgeJob of an unknown job " + key)
	}
	delete(a.jobs, key)
	delete(a.hist, key)
	return a.wrote(job, s.publishJob("JobDeregistered", job, true))
}

func (s *Server) publishJob(typ string, job map[string]any, deleted bool) uint64 {
	payload := map[string]any{"Job": job}
	if deleted {
		payload["Deleted"] = true
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	return s.Publish(Event{Topic: "Job", Type: typ, Key: fmt.Sprint(job["ID"]), Namespace: fmt.Sprint(job["Namespace"]), Payload: raw})
}

// guard answers 403 as Nomad does to a token Authorize refuses, and sets
// X-Nomad-Index on every answer (the latest index, where the handler sets
// none).
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Authorize != nil && !s.opts.Authorize(r.Header.Get("X-Nomad-Token")) {
			answerText(w, http.StatusForbidden, "", "Permission denied") // E: no newline, no X-Nomad-Index
			return
		}
		s.mu.Lock()
		index, fail := s.nextIndex-1, s.failStatus
		s.mu.Unlock()
		if fail != 0 { // SetFailStatus: the foreground watcher's tests read a failing Nomad
			failAnswer(w, fail)
			return
		}
		w.Header().Set("X-Nomad-Index", strconv.FormatUint(index, 10))
		w.Header().Set("Content-Type", "application/json")
		h(w, r)
	}
}

func (s *Server) agentSelf(w http.ResponseWriter, r *http.Request) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	writeJSON(w, http.StatusOK, 0, map[string]any{
		"config": map[string]any{"Client": map[string]any{"Enabled": a.nodeID != ""}},
		"member": map[string]any{"Name": "fake.global", "Status": "alive"},
		"stats":  map[string]any{"client": map[string]any{"node_id": a.nodeID}},
	})
}

func (s *Server) nodeInfo(w http.ResponseWriter, r *http.Request) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	node := a.node
	if r.PathValue("id") != a.nodeID {
		node = a.others[r.PathValue("id")]
	}
	if node == nil {
		http.Error(w, "node not found", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, 0, node)
}

// AddNode adds node (a /v1/node/:id answer, decoded) to the cluster: it is
// not the agent's own (SetNode), but /v1/node/:id answers it, as for any
// node of a real cluster.
func (s *Server) AddNode(node map[string]any) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.others == nil {
		a.others = map[string]map[string]any{}
	}
	a.others[fmt.Sprint(node["ID"])] = node
}

// JobModifyIndex is the registered job's JobModifyIndex, 0 when there is
// none.
func (s *Server) JobModifyIndex(namespace, id string) uint64 {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	if j, ok := a.jobs[namespace+"/"+id]; ok {
		return uint64(toFloat(j["JobModifyIndex"]))
	}
	return 0
}

// jobList answers /v1/jobs: the stubs of the namespace asked ("*": all),
// with each job's Meta when ?meta=true (C). ?index=N&wait=D blocks as Nomad
// does (C): the answer's X-Nomad-Index is the jobs table's index when the
// list was last made; it is made again only when a job of the namespace
// asked changes, and answered once that index is above N or the wait is
// over (a job of another namespace does not wake it, and the answer then
// keeps the index it had).
func (s *Server) jobList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ns := q.Get("namespace")
	if ns == "" {
		ns = "default"
	}
	withMeta := q.Get("meta") == "true"
	after, wait := blocking(q)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	a := s.api()
	for {
		a.mu.Lock()
		stubs, index, seen := a.list(ns, withMeta), a.index, a.nsWrite(ns)
		a.mu.Unlock()
		if after == 0 || index > after {
			queryMeta(w)
			writeJSON(w, http.StatusOK, index, stubs)
			return
		}
		for woken := false; !woken; {
			s.mu.Lock()
			changed, closed := s.changed, s.closed
			s.mu.Unlock()
			a.mu.Lock()
			woken = a.nsWrite(ns) != seen
			a.mu.Unlock()
			if woken {
				break
			}
			if closed {
				after = 0
				break
			}
			select {
			case <-changed:
			case <-timer.C:
				queryMeta(w)
				writeJSON(w, http.StatusOK, index, stubs) // the last list made, with its index
				return
			case <-r.Context().Done():
				return
			}
		}
	}
}

// blocking returns a blocking query's ?index= and ?wait= (Nomad's default
// wait 5 minutes, at most 10).
func blocking(q url.Values) (uint64, time.Duration) {
	after, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait := 5 * time.Minute
	if d, err := time.ParseDuration(q.Get("wait")); err == nil && d > 0 {
		wait = min(d, 10*time.Minute)
	}
	return after, wait
}

// nsWrite is the last job write in namespace ns ("*": any) (a.mu held).
func (a *apiState) nsWrite(ns string) uint64 {
	if ns == "*" {
		return a.index
	}
	return a.nsIndex[ns]
}

// list returns the job stubs of namespace ns ("*": all) (a.mu held): by
// namespace, then ID, as Nomad lists them (C).
func (a *apiState) list(ns string, withMeta bool) []map[string]any {
	keys := make([]string, 0, len(a.jobs))
	for k := range a.jobs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	stubs := []map[string]any{}
	for _, k := range keys {
		j := a.jobs[k]
		if ns != "*" && j["Namespace"] != ns {
			continue
		}
		stub := map[string]any{}
		for _, f := range []string{"CreateIndex", "Datacenters", "ID", "JobModifyIndex", "ModifyIndex", "Multiregion", "Name", "Namespace", "NodePool", "ParentID", "Priority", "Status", "StatusDescription", "Stop", "SubmitTime", "Type"} {
			stub[f] = j[f]
		}
		stub["Periodic"], stub["ParameterizedJob"] = j["Periodic"] != nil, j["ParameterizedJob"] != nil
		if withMeta {
			stub["Meta"] = j["Meta"]
		}
		stubs = append(stubs, stub)
	}
	return stubs
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) (map[string]any, string, bool) {
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		ns = "default"
	}
	key := ns + "/" + r.PathValue("id")
	a := s.api()
	j, ok := a.jobs[key]
	if !ok {
		// C: text, with the jobs table's index.
		queryMeta(w)
		answerText(w, http.StatusNotFound, strconv.FormatUint(a.index, 10), "job not found")
	}
	return j, key, ok
}

// HoldJobReads holds every GET /v1/job/:id from now on until release is
// called (or the request ends), sending the job's "namespace/id" on waiting
// as each one is held. A test control, not Nomad's behaviour: the answer,
// once released, is the recorded one, made at release.
func (s *Server) HoldJobReads() (waiting <-chan string, release func()) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	held, w := make(chan struct{}), make(chan string, 64)
	a.held, a.waiting = held, w
	var once sync.Once
	return w, func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			close(held)
			a.held, a.waiting = nil, nil
		})
	}
}

func (s *Server) jobInfo(w http.ResponseWriter, r *http.Request) {
	a := s.api()
	a.mu.Lock()
	if held, waiting := a.held, a.waiting; held != nil {
		a.mu.Unlock()
		ns := r.URL.Query().Get("namespace")
		if ns == "" {
			ns = "default"
		}
		select {
		case waiting <- ns + "/" + r.PathValue("id"):
		default:
		}
		select {
		case <-held:
		case <-r.Context().Done():
			return
		}
		a.mu.Lock()
	}
	defer a.mu.Unlock()
	if j, _, ok := s.job(w, r); ok {
		// C: X-Nomad-Index is the job's ModifyIndex.
		queryMeta(w)
		writeJSON(w, http.StatusOK, uint64(toFloat(j["ModifyIndex"])), j)
	}
}

func (s *Server) jobVersions(w http.ResponseWriter, r *http.Request) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, key, ok := s.job(w, r); ok {
		vs := a.hist[key]
		out := make([]map[string]any, len(vs))
		for i := range vs {
			out[i] = vs[len(vs)-1-i] // newest first, as Nomad answers
		}
		writeJSON(w, http.StatusOK, 0, map[string]any{"Diffs": nil, "KnownLeader": true, "LastContact": 0, "NextToken": "", "Versions": out})
	}
}

// Clone deep-copies a decoded JSON object (a recorded answer a test
// changes without touching the one the fake serves).
func Clone(m map[string]any) map[string]any {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case int:
		return float64(n)
	case json.Number:
		f, _ := n.Float64()
		return f
	}
	f, _ := strconv.ParseFloat(strings.TrimSpace(fmt.Sprint(v)), 64)
	return f
}
