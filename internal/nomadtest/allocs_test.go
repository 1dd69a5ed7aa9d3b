package nomadtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// gAllocs returns the allocation transcript G answered at step i (its
// only one) and that step.
func gAlloc(t *testing.T, steps []TranscriptStep, i int) map[string]any {
	t.Helper()
	var allocs []map[string]any
	if err := json.Unmarshal(steps[i].Response.Body, &allocs); err != nil || len(allocs) != 1 {
		t.Fatalf("G step %d: want one allocation: %v", i, err)
	}
	return allocs[0]
}

type allocAnswer struct {
	code   int
	index  uint64
	allocs []map[string]any
	took   time.Duration
}

func getAllocs(t *testing.T, s *Server, path string) allocAnswer {
	start := time.Now()
	rr := httptest.NewRecorder()
	s.srv.Handler.ServeHTTP(rr, httptest.NewRequest("GET", path, nil))
	a := allocAnswer{code: rr.Code, took: time.Since(start)}
	a.index, _ = strconv.ParseUint(rr.Header().Get("X-Nomad-Index"), 10, 64)
	if err := json.Unmarshal(rr.Body.Bytes(), &a.allocs); err != nil {
		t.Errorf("%s: body %q: %v", path, rr.Body.String(), err)
	}
	if a.allocs == nil {
		t.Errorf("%s: body %q: Nomad answers [], never null", path, rr.Body.String())
	}
	return a
}

// TestNodeAllocationsAsRecorded replays transcript G: the same answers at
// the same moments, on synctest's clock.
func TestNodeAllocationsAsRecorded(t *testing.T) {
	steps := Transcript(t, "G")
	placed, pulling, moved := gAlloc(t, steps, 4), gAlloc(t, steps, 5), gAlloc(t, steps, 6)
	node := placed["NodeID"].(string)
	path := "/v1/node/" + node + "/allocations"
	synctest.Test(t, func(t *testing.T) {
		s := NewWithListener(nopListener{}, Options{})
		defer s.Close()

		// Step 1: no allocations: [] and index 1.
		if a := getAllocs(t, s, path); a.code != 200 || a.index != 1 || len(a.allocs) != 0 {
			t.Fatalf("empty node: %d index %d %d allocations; recorded 200, 1, []", a.code, a.index, len(a.allocs))
		}
		s.RegisterJob(map[string]any{"ID": "rec-g", "Namespace": "default"}) // raft moves on

		// Step 4: a blocking query from 1 is woken 1 s in by the placement.
		done := make(chan allocAnswer)
		go func() { done <- getAllocs(t, s, path+"?index=1&wait=30s") }()
		time.Sleep(time.Second)
		synctest.Wait()
		first := s.PutAllocation(placed)
		a := <-done
		if a.took != time.Second || a.index != first || len(a.allocs) != 1 || a.allocs[0]["ClientStatus"] != "pending" {
			t.Fatalf("woken after %v, index %d (put at %d), %d allocations", a.took, a.index, first, len(a.allocs))
		}

		// Step 5: while pulling, a plain list has the alloc's ModifyIndex.
		pullIndex := s.PutAllocation(pulling)
		a = getAllocs(t, s, path)
		if a.index != pullIndex || a.allocs[0]["TaskStates"] == nil || a.allocs[0]["CreateIndex"] != float64(first) {
			t.Fatalf("while pulling: index %d (want %d), CreateIndex %v (want %d)", a.index, pullIndex, a.allocs[0]["CreateIndex"], first)
		}

		// Step 6: a blocking query from there returns when the task moved
		// on, 14 s later.
		go func() { done <- getAllocs(t, s, path+"?index="+strconv.FormatUint(pullIndex, 10)+"&wait=30s") }()
		time.Sleep(14 * time.Second)
		synctest.Wait()
		end := s.PutAllocation(moved)
		if a = <-done; a.took != 14*time.Second || a.index != end || a.allocs[0]["ClientStatus"] != "failed" {
			t.Fatalf("after the pull: took %v, index %d (want %d), %v", a.took, a.index, end, a.allocs[0]["ClientStatus"])
		}

		// Not recorded in G, as for every other blocking read (A8, C): with
		// nothing changing it answers the same index after the wait, and
		// another node's change does not wake it.
		go func() { done <- getAllocs(t, s, path+"?index="+strconv.FormatUint(end, 10)+"&wait=2s") }()
		other := Clone(placed)
		other["ID"], other["NodeID"] = "other-alloc", "other-node"
		s.PutAllocation(other)
		if a = <-done; a.took != 2*time.Second || a.index != end {
			t.Fatalf("idle: took %v, index %d (want %d)", a.took, a.index, end)
		}
		s.DeleteAllocation(moved["ID"].(string))
		if a = getAllocs(t, s, path); len(a.allocs) != 0 || a.index <= end {
			t.Fatalf("after GC: %d allocations, index %d", len(a.allocs), a.index)
		}
	})
}

// GET /v1/allocation/:id answers as testdata/nomad-2.0.5/alloc-get.txt
// records: an identity's allocation running (run/running), the same once
// stopped (stop/complete), and 404 "alloc not found" in plain text for an ID
// the fake does not hold.
func TestAllocationReadAsRecorded(t *testing.T) {
	t.Parallel()
	rec, err := os.ReadFile("testdata/nomad-2.0.5/alloc-get.txt")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"DesiredStatus": "run", "ClientStatus": "running"`, `"DesiredStatus": "stop", "ClientStatus": "complete"`,
		"HTTP/1.1 404 Not Found\nContent-Type: text/plain; charset=utf-8\nX-Nomad-Index: 19\nalloc not found"} {
		if !strings.Contains(string(rec), want) {
			t.Fatalf("the recording lacks %q", want)
		}
	}
	s := StartT(t, Options{})
	const id = "af38baee-0377-1cb3-3a7c-dffda7b896be"
	s.IssueIdentity(Identity{AllocationID: id, Name: "relay"})
	get := func(id string) (int, string, string, map[string]any) {
		t.Helper()
		resp, err := http.Get(s.URL + "/v1/allocation/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var al map[string]any
		json.Unmarshal(b, &al)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b), al
	}
	if code, _, _, al := get(id); code != 200 || al["DesiredStatus"] != "run" || al["ClientStatus"] != "running" || al["JobID"] != "prefetch" || al["Namespace"] != "default" {
		t.Errorf("running: got %d %v", code, al)
	}
	if s.StopAllocation(id) == 0 {
		t.Fatal("StopAllocation: no such allocation")
	}
	if code, _, _, al := get(id); code != 200 || al["DesiredStatus"] != "stop" || al["ClientStatus"] != "complete" {
		t.Errorf("stopped: got %d %v", code, al)
	}
	if code, ct, body, _ := get("00000000-0000-0000-0000-000000000000"); code != 404 || ct != "text/plain; charset=utf-8" || body != "alloc not found" {
		t.Errorf("unknown: got %d %q %q", code, ct, body)
	}
}
