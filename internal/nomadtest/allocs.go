package nomadtest

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"time"
)

// A node's allocations, shaped like Nomad 2.0.5's answers in transcript G:
// GET /v1/node/:id/allocations lists the allocations placed on the node,
// with X-Nomad-Index the highest ModifyIndex among them, or, for a node with
// none, the allocations table's index (1 before any write: Nomad answers 1
// rather than 0, so that a blocking query on it blocks). ?index=N&wait=D
// blocks until that index passes N, or answers what is there after D
// (Nomad's default wait 5 minutes, capped at 10), as the recording shows:
// woken 1.0 s after a job was registered, and 14.0 s later when the task
// moved on after its pull.

// PutAllocation stores alloc (a decoded allocation as Nomad encodes it, such
// as one of transcript G's; its NodeID says whose it is) at the next index:
// its ModifyIndex is set to that index, and CreateIndex too when its ID is
// new. Blocking queries on its node wake. It returns the index.
func (s *Server) PutAllocation(alloc map[string]any) uint64 {
	alloc = Clone(alloc)
	id := fmt.Sprint(alloc["ID"])
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	index := s.allocWriteIndex()
	if a.allocs == nil {
		a.allocs = map[string]map[string]any{}
	}
	if prev, ok := a.allocs[id]; ok {
		alloc["CreateIndex"] = prev["CreateIndex"]
	} else {
		alloc["CreateIndex"] = index
	}
	alloc["ModifyIndex"] = index
	a.allocs[id] = alloc
	a.allocIndex = index
	s.broadcast()
	return index
}

// StopAllocation marks allocation id stopped (desired "stop", client
// "complete", as Nomad 2.0.5 shows one after `nomad alloc stop`,
// testdata/nomad-2.0.5/alloc-get.txt) at the next index, and returns it;
// 0 when the fake holds no such allocation. The fake goes on taking the
// stopped allocation's identities as tokens (Nomad answers them 403): no
// caller here depends on that.
func (s *Server) StopAllocation(id string) uint64 {
	a := s.api()
	a.mu.Lock()
	al, ok := a.allocs[id]
	a.mu.Unlock()
	if !ok {
		return 0
	}
	al = Clone(al)
	al["DesiredStatus"], al["ClientStatus"] = "stop", "complete"
	return s.PutAllocation(al)
}

// issuedAllocation records the allocation an identity names, running, when
// the fake holds none of that ID: Nomad signs identities for its
// allocations only. It writes nothing (no index is taken) and is on no
// node's list.
func (s *Server) issuedAllocation(id, namespace, job, group string) {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.allocs[id]; ok {
		return
	}
	if a.allocs == nil {
		a.allocs = map[string]map[string]any{}
	}
	s.mu.Lock()
	index := max(s.nextIndex-1, 1)
	s.mu.Unlock()
	a.allocs[id] = map[string]any{"ID": id, "Namespace": namespace, "JobID": job, "TaskGroup": group,
		"DesiredStatus": "run", "ClientStatus": "running", "CreateIndex": index, "ModifyIndex": index}
}

// allocation answers GET /v1/allocation/:id as Nomad 2.0.5 does
// (testdata/nomad-2.0.5/alloc-get.txt): the allocation, X-Nomad-Index its
// ModifyIndex, or 404 "alloc not found" in plain text.
func (s *Server) allocation(w http.ResponseWriter, r *http.Request) {
	a := s.api()
	a.mu.Lock()
	al, ok := a.allocs[r.PathValue("id")]
	if ok {
		al = Clone(al)
	}
	a.mu.Unlock()
	queryMeta(w)
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, "alloc not found")
		return
	}
	writeJSON(w, http.StatusOK, uint64(toFloat(al["ModifyIndex"])), al)
}

// DeleteAllocation removes an allocation (garbage collected) at the next
// index and returns it.
func (s *Server) DeleteAllocation(id string) uint64 {
	a := s.api()
	a.mu.Lock()
	defer a.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	index := s.allocWriteIndex()
	delete(a.allocs, id)
	a.allocIndex = index
	s.broadcast()
	return index
}

// nodeAllocs returns node's allocations, by ID, and their index; a.mu is
// held.
func (a *apiState) nodeAllocs(node string) ([]map[string]any, uint64) {
	out := []map[string]any{}
	var index uint64
	for _, al := range a.allocs {
		if fmt.Sprint(al["NodeID"]) != node {
			continue
		}
		out = append(out, al)
		index = max(index, uint64(toFloat(al["ModifyIndex"])))
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]["ID"]) < fmt.Sprint(out[j]["ID"]) })
	if len(out) == 0 {
		index = max(a.allocIndex, 1)
	}
	return out, index
}

func (s *Server) nodeAllocations(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, _ := strconv.ParseUint(q.Get("index"), 10, 64)
	wait := 5 * time.Minute
	if d, err := time.ParseDuration(q.Get("wait")); err == nil && d > 0 {
		wait = min(d, 10*time.Minute)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	a := s.api()
	for {
		a.mu.Lock()
		allocs, index := a.nodeAllocs(r.PathValue("id"))
		s.mu.Lock()
		changed, closed := s.changed, s.closed
		s.mu.Unlock()
		if after == 0 || index > after || closed {
			queryMeta(w)
			writeJSON(w, http.StatusOK, index, allocs)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		select {
		case <-changed:
		case <-timer.C:
			after = 0
		case <-r.Context().Done():
			return
		}
	}
}

// allocWriteIndex takes the next index for a write of the allocations
// table; s.mu is held. It is above 1, the index a node with no allocations
// answers, so that a blocking query from 1 wakes for the first write.
func (s *Server) allocWriteIndex() uint64 {
	index := max(s.nextIndex, 2)
	s.nextIndex = index + 1
	return index
}
