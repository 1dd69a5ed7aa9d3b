package stage

import (
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

func parsed(t *testing.T) *api.Job {
	t.Helper()
	raw, err := os.ReadFile("testdata/parse-rec-f-v2.json")
	if err != nil {
		t.Fatal(err)
	}
	var job api.Job
	if err := json.Unmarshal(raw, &job); err != nil {
		t.Fatal(err)
	}
	return &job
}

func TestReduceKeepsPlacementAndImages(t *testing.T) {
	s, err := Reduce(parsed(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Datacenters) != 1 || s.Datacenters[0] != "dc1" || len(s.Groups) != 1 {
		t.Fatalf("spec %+v", s)
	}
	g := s.Groups[0]
	if g.Name != "g" || len(g.Constraints) != 1 || g.Constraints[0] != (Constraint{"${node.class}", "=", "edge"}) {
		t.Fatalf("group %+v", g)
	}
	if len(g.Tasks) != 1 || g.Tasks[0].Image != "registry.service.consul:5000/app:v2" || g.Tasks[0].Name != "t" {
		t.Fatalf("tasks %+v", g.Tasks)
	}
	job := s.APIJob("default", "rec-f")
	if *job.ID != "rec-f" || job.TaskGroups[0].Tasks[0].Config["image"] != "registry.service.consul:5000/app:v2" || job.TaskGroups[0].Constraints[0].RTarget != "edge" {
		t.Fatalf("api job %+v", job)
	}
}

func TestReduceRefusesAJobWithoutDockerTasks(t *testing.T) {
	job := parsed(t)
	job.TaskGroups[0].Tasks[0].Driver = "exec"
	if _, err := Reduce(job); err == nil || !strings.Contains(err.Error(), "rec-f has no docker task") {
		t.Fatalf("err = %v", err)
	}
}

func TestSetRoundTripsAndReplacesAJob(t *testing.T) {
	spec, err := Reduce(parsed(t))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	old := Job{Namespace: "default", ID: "old", StagedAt: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour), Spec: spec}
	a := Job{Namespace: "default", ID: "rec-f", Base: 11, StagedAt: now, Expires: now.Add(time.Hour), Spec: spec}
	s := Set{Format: Format, Jobs: []Job{old, a}}
	a2 := a
	a2.Base = 15
	s = s.With(a2, now)
	if len(s.Jobs) != 1 || s.Jobs[0].Base != 15 {
		t.Fatalf("With kept %+v", s.Jobs)
	}
	item, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(item)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := back.Find("default", "rec-f")
	if !ok || got.Base != 15 || !got.Expires.Equal(a.Expires) || got.Spec.Groups[0].Tasks[0].Image != "registry.service.consul:5000/app:v2" {
		t.Fatalf("decoded %+v", back)
	}
	if _, found := back.Without("default", "nope"); found {
		t.Fatal("Without found a job that is not staged")
	}
	if rest, found := back.Without("default", "rec-f"); !found || len(rest.Jobs) != 0 {
		t.Fatalf("Without = %+v, %v", rest, found)
	}
}

func TestDecodeRefusesWhatBreaksABound(t *testing.T) {
	spec := Spec{Groups: []Group{{Name: "g", Tasks: []Task{{Name: "t", Image: "a:1"}}}}}
	many := Set{Format: Format}
	for i := range MaxJobs + 1 {
		many.Jobs = append(many.Jobs, Job{Namespace: "default", ID: strings.Repeat("j", i+1), Spec: spec})
	}
	bigTasks := Spec{Groups: []Group{{Name: "g"}}}
	for range MaxImagesPerJob + 1 {
		bigTasks.Groups[0].Tasks = append(bigTasks.Groups[0].Tasks, Task{Name: "t", Image: "a:1"})
	}
	for name, c := range map[string]struct {
		item string
		want string
	}{
		"not json":     {`{"format":1,`, "unexpected EOF"},
		"other format": {`{"format":2,"jobs":[]}`, "format 2"},
		"unknown key":  {`{"format":1,"jobs":[],"extra":1}`, "unknown field"},
		"too big":      {strings.Repeat(" ", MaxSetBytes+1), "over the limit"},
		"too many":     {mustJSON(t, many), "17 jobs staged"},
		"twice":        {mustJSON(t, Set{Format: Format, Jobs: []Job{{Namespace: "a", ID: "b", Spec: spec}, {Namespace: "a", ID: "b", Spec: spec}}}), "staged twice"},
		"unnamed":      {mustJSON(t, Set{Format: Format, Jobs: []Job{{Spec: spec}}}), "no namespace or ID"},
		"tasks":        {mustJSON(t, Set{Format: Format, Jobs: []Job{{Namespace: "a", ID: "b", Spec: bigTasks}}}), "65 docker tasks"},
		"long string":  {mustJSON(t, Set{Format: Format, Jobs: []Job{{Namespace: "a", ID: "b", Spec: Spec{Groups: []Group{{Name: strings.Repeat("x", 2000)}}}}}}), "2000 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Decode(c.item)
			if !errors.Is(err, ErrBad) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrBad with %q", err, c.want)
			}
		})
	}
}

func TestEncodeRefusesASetOverTheBytes(t *testing.T) {
	s := Set{}
	for i := range MaxJobs {
		spec := Spec{Meta: map[string]string{}, Groups: []Group{{Name: "g", Tasks: []Task{{Name: "t", Image: "a:1"}}}}}
		for k := range 4 {
			spec.Meta[strings.Repeat("k", k+1)] = strings.Repeat("v", maxString)
		}
		s.Jobs = append(s.Jobs, Job{Namespace: "default", ID: strings.Repeat("j", i+1), Spec: spec})
	}
	if _, err := s.Encode(); !errors.Is(err, ErrBad) || !strings.Contains(err.Error(), "bytes encoded") {
		t.Fatalf("err = %v", err)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Prune drops what the agents ignore already: the expired, the registered
// since (JobModifyIndex no longer Base) and the deregistered (not found,
// Base not 0); it keeps a job it can't read, one not registered yet, one
// still at its Base, and keep unread.
func TestPrune(t *testing.T) {
	now := time.Date(2026, 12, 7, 4, 0, 0, 0, time.UTC)
	job := func(id string, base uint64, expires time.Time) Job {
		return Job{Namespace: "default", ID: id, Base: base, Expires: expires}
	}
	later := now.Add(time.Hour)
	s := Set{Format: Format, Jobs: []Job{
		job("expired", 5, now), job("registered", 5, later), job("deregistered", 5, later), job("new", 0, later),
		job("live", 7, later), job("unreadable", 5, later), job("kept", 5, later), job("new-registered", 0, later),
	}}
	indexes := map[string]uint64{"registered": 9, "live": 7, "new-registered": 3}
	var asked []string
	out, dropped := s.Prune(now, "default/kept", func(j Job) (uint64, error) {
		asked = append(asked, j.ID)
		if j.ID == "unreadable" {
			return 0, errors.New("Unexpected response code: 500")
		}
		return indexes[j.ID], nil
	})
	var ids []string
	for _, j := range out.Jobs {
		ids = append(ids, j.ID)
	}
	if want := []string{"new", "live", "unreadable", "kept"}; !slices.Equal(ids, want) {
		t.Errorf("kept %q, want %q", ids, want)
	}
	want := []Dropped{{"default/expired", "its -ttl passed"}, {"default/registered", "registered since it was staged"}, {"default/deregistered", "deregistered since it was staged"}, {"default/new-registered", "registered since it was staged"}}
	if !slices.Equal(dropped, want) {
		t.Errorf("dropped %+v, want %+v", dropped, want)
	}
	if slices.Contains(asked, "expired") || slices.Contains(asked, "kept") || len(asked) != 6 {
		t.Errorf("read %q", asked)
	}
}
