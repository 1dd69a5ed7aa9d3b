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

	s := start(t, Options{})
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
