package nomadtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The job and node API, shaped like Nomad 2.0.5's answers in
// testdata/nomad-2.0.5 (GET /v1/agent/self, /v1/node/:id, /v1/jobs,
// /v1/job/:id, /v1/job/:id/versions), kept small: what prefetch's discovery
// reads. Registering, stopping and purging a job publishes the Job events a
// real server does (JobRegistered; JobDeregistered with Stop, then with
// Deleted on a purge), at the index the API then reports.

// apiState is the fake cluster's node and jobs.
type apiState struct {
	mu     sync.Mutex
	nodeID string
	node   map[string]any
	jobs   map[string]map[string]any // "namespace/id" → the job, as Nomad encodes it
	hist   map[string][]map[string]any
	// allocs are every node's allocations by ID (allocs.go), allocIndex
	// the allocations table's last write.
	allocs     map[string]map[string]any
	allocIndex uint64
}

func (s *Server) api() *apiState {
	s.apiOnce.Do(func() {
		s.apiS = &apiState{jobs: map[string]map[string]any{}, hist: map[string][]map[string]any{}}
	})
	return s.apiS
}

func (s *Server) routeAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/agent/self", s.guard(s.agentSelf))
	mux.HandleFunc("GET /v1/node/{id}", s.guard(s.nodeInfo))
	mux.HandleFunc("GET /v1/node/{id}/allocations", s.guard(s.nodeAllocations))
	mux.HandleFunc("GET /v1/jobs", s.guard(s.jobList))
	mux.HandleFunc("GET /v1/job/{id}", s.guard(s.jobInfo))
	mux.HandleFunc("GET /v1/job/{id}/versions", s.guard(s.jobVersions))
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
	job = clone(job)
	if ns, _ := job["Namespace"].(string); ns == "" {
		job["Namespace"] = "default"
	}
	key := fmt.Sprintf("%s/%s", job["Namespace"], job["ID"])
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
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
	a.hist[key] = append(a.hist[key], clone(job))
	return s.publishJob("JobRegistered", job, false)
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
	job["Stop"] = true
	job["Version"] = int(toFloat(job["Version"])) + 1
	return s.publishJob("JobDeregistered", job, false)
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
	return s.publishJob("JobDeregistered", job, true)
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
// X-Nomad-Index on every answer.
func (s *Server) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Authorize != nil && !s.opts.Authorize(r.Header.Get("X-Nomad-Token")) {
			http.Error(w, "Permission denied", http.StatusForbidden)
			return
		}
		s.mu.Lock()
		index, fail := s.nextIndex-1, s.failStatus
		s.mu.Unlock()
		if fail != 0 {
			http.Error(w, http.StatusText(fail), fail)
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
	if a.node == nil || r.PathValue("id") != a.nodeID {
		http.Error(w, "node not found", http.StatusNotFound)
		return
	}
	writeJSON(w, http.StatusOK, 0, a.node)
}

// jobList answers /v1/jobs: the stubs of the namespace asked ("*": all).
func (s *Server) jobList(w http.ResponseWriter, r *http.Request) {
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		ns = "default"
	}
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
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
		for _, f := range []string{"CreateIndex", "Datacenters", "ID", "JobModifyIndex", "ModifyIndex", "Name", "Namespace", "NodePool", "ParentID", "Priority", "Status", "StatusDescription", "Stop", "SubmitTime", "Type"} {
			stub[f] = j[f]
		}
		stub["Periodic"], stub["ParameterizedJob"] = j["Periodic"] != nil, j["ParameterizedJob"] != nil
		stubs = append(stubs, stub)
	}
	writeJSON(w, http.StatusOK, 0, stubs)
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) (map[string]any, string, bool) {
	ns := r.URL.Query().Get("namespace")
	if ns == "" {
		ns = "default"
	}
	key := ns + "/" + r.PathValue("id")
	j, ok := s.api().jobs[key]
	if !ok {
		http.Error(w, "job not found", http.StatusNotFound)
	}
	return j, key, ok
}

func (s *Server) jobInfo(w http.ResponseWriter, r *http.Request) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	if j, _, ok := s.job(w, r); ok {
		writeJSON(w, http.StatusOK, 0, j)
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

// clone deep-copies a decoded JSON object.
func clone(m map[string]any) map[string]any {
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
