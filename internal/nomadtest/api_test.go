package nomadtest

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/hashicorp/nomad/api"
)

// A job's versions keep the CreateIndex of its first registration, and
// each has its own JobModifyIndex, as Nomad 2.0.5's
// testdata/nomad-2.0.5/job-web-versions.json shows (158 for versions 0 and 1,
// JobModifyIndex 158 then 164).
func TestRegisterKeepsCreateIndex(t *testing.T) {
	t.Parallel()
	var versions struct{ Versions []api.Job }
	b, err := os.ReadFile("testdata/nomad-2.0.5/job-web-versions.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &versions); err != nil {
		t.Fatal(err)
	}
	if v := versions.Versions; len(v) != 2 || *v[0].CreateIndex != *v[1].CreateIndex || *v[0].JobModifyIndex == *v[1].JobModifyIndex {
		t.Fatalf("the recording no longer shows a kept CreateIndex: %+v", v)
	}

	s := StartT(t, Options{})
	var job map[string]any
	b, err = os.ReadFile("testdata/nomad-2.0.5/job-web.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &job); err != nil {
		t.Fatal(err)
	}
	s.RegisterJob(map[string]any{"ID": "other", "Name": "other"}) // so that indexes differ from the recording's
	first := s.RegisterJob(job)
	second := s.RegisterJob(job)
	c, err := api.NewClient(&api.Config{Address: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := c.Jobs().Info("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.CreateIndex != first || *got.JobModifyIndex != second || *got.Version != 1 {
		t.Errorf("after two registrations at %d and %d: CreateIndex %d, JobModifyIndex %d, Version %d; want %d, %d, 1",
			first, second, *got.CreateIndex, *got.JobModifyIndex, *got.Version, first, second)
	}
}

// A stop is a new version whose index is the job's ModifyIndex and
// JobModifyIndex, in the job read and in the stop's JobDeregistered
// payload, as transcript B1 shows (the stop at 108: ModifyIndex 108,
// JobModifyIndex 108, Version 2, Stop true).
func TestStopMovesModifyIndex(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	s.RegisterJob(map[string]any{"ID": "rec-b1", "Name": "rec-b1"})
	stop := s.StopJob("default", "rec-b1")
	c, err := api.NewClient(&api.Config{Address: s.URL})
	if err != nil {
		t.Fatal(err)
	}
	got, meta, err := c.Jobs().Info("rec-b1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *got.ModifyIndex != stop || *got.JobModifyIndex != stop || !*got.Stop || *got.Version != 1 || meta.LastIndex != stop {
		t.Errorf("after the stop at %d: ModifyIndex %d, JobModifyIndex %d, Stop %v, Version %d, X-Nomad-Index %d",
			stop, *got.ModifyIndex, *got.JobModifyIndex, *got.Stop, *got.Version, meta.LastIndex)
	}
	s.mu.Lock()
	f := s.frames[len(s.frames)-1]
	s.mu.Unlock()
	var p struct {
		Job struct{ ModifyIndex, JobModifyIndex uint64 }
	}
	if err := json.Unmarshal(f.events[0].Payload, &p); err != nil {
		t.Fatal(err)
	}
	if f.index != stop || p.Job.ModifyIndex != stop || p.Job.JobModifyIndex != stop {
		t.Errorf("the stop's frame %d: ModifyIndex %d, JobModifyIndex %d; want %d", f.index, p.Job.ModifyIndex, p.Job.JobModifyIndex, stop)
	}
}

// HoldJobReads holds a job read until released and says which one it
// holds; the read then answers as at its release (a job registered while it
// was held is found).
func TestHoldJobReads(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{})
	waiting, release := s.HoldJobReads()
	type answer struct {
		job *api.Job
		err error
	}
	done := make(chan answer, 1)
	go func() {
		c, err := api.NewClient(&api.Config{Address: s.URL})
		if err != nil {
			done <- answer{err: err}
			return
		}
		job, _, err := c.Jobs().Info("web", &api.QueryOptions{Namespace: "default"})
		done <- answer{job, err}
	}()
	if key := <-waiting; key != "default/web" {
		t.Fatalf("held %q, want default/web", key)
	}
	s.RegisterJob(map[string]any{"ID": "web", "Name": "web"})
	release()
	a := <-done
	if a.err != nil || a.job == nil || *a.job.ID != "web" {
		t.Fatalf("the released read: %+v, %v", a.job, a.err)
	}
}
