package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/discovery"
	"github.com/nomad-prefetch/nomad-prefetch/internal/catalogtest"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
)

// prefetch stage, when it writes the staged set and with -cancel, drops
// the jobs whose stage is over (registered or deregistered since, or past
// their TTL), reading each from Nomad (the fake), so a set of 16 served
// jobs no longer refuses a 17th. No agent and no Docker: the wait that
// follows the write ends at -timeout, which this test does not look at.
func TestStagePrunesServedJobs(t *testing.T) {
	ctx := context.Background()
	srv := fakeCluster(t)
	c, err := discovery.NewClient(config.Nomad{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	entry := func(id string, base uint64, expires time.Time) stage.Job {
		return stage.Job{Namespace: "default", ID: id, Base: base, StagedAt: now, Expires: expires,
			Spec: stage.Spec{Groups: []stage.Group{{Name: "g", Tasks: []stage.Task{{Name: "t", Image: "reg:5000/" + id + ":1"}}}}}}
	}
	// 14 jobs staged, then registered without -run; one staged over a
	// registered version that is purged since; one new job not registered
	// yet: 16, the limit.
	var jobs []stage.Job
	for i := range 14 {
		id := fmt.Sprintf("served-%d", i)
		base := srv.RegisterJob(webJob(t, id, "reg:5000/"+id+":1", "busybox:1"))
		jobs = append(jobs, entry(id, base, now.Add(time.Hour)))
		srv.RegisterJob(webJob(t, id, "reg:5000/"+id+":2", "busybox:1"))
	}
	gone := srv.RegisterJob(webJob(t, "gone", "reg:5000/gone:1", "busybox:1"))
	srv.PurgeJob("default", "gone")
	jobs = append(jobs, entry("gone", gone, now.Add(time.Hour)), entry("new", 0, now.Add(time.Hour)))
	put := func(jobs []stage.Job) {
		t.Helper()
		if _, _, err := stage.Update(ctx, c, 5*time.Second, func(stage.Set, error) (stage.Set, error) {
			return stage.Set{Format: stage.Format, Jobs: jobs}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	ids := func() []string {
		t.Helper()
		s, _, err := stage.Read(ctx, c, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, j := range s.Jobs {
			out = append(out, j.ID)
		}
		return out
	}
	put(jobs)

	catalogFor(t, catalogtest.Consul) // no agent
	t.Setenv("NOMAD_ADDR", srv.URL)
	t.Setenv("NOMAD_TOKEN", "")
	hcl := strings.ReplaceAll(stageJobHCL, "CLUSTER", "reg:5000")
	jobFile := writeFile(t, "registry.nomad.hcl", hcl)
	srv.AddParse(hcl, `tag = "2"`+"\n", parsedRegistry(t, "reg:5000/stage-reg:2"))
	_, _, stderr := runCLI(t, "stage", "-provider", "consul", "-timeout", "100ms", "-interval", "10ms", "-var", "tag=2", jobFile)
	if !strings.Contains(stderr, "stage: default/registry staged") || !strings.Contains(stderr, "default/served-0 (registered since it was staged)") || !strings.Contains(stderr, "default/gone (deregistered since it was staged)") {
		t.Errorf("stage over a full set of served jobs: stderr:\n%s", stderr)
	}
	if got := ids(); !slices.Equal(got, []string{"new", "registry"}) {
		t.Errorf("after the stage the set holds %q, want [new registry]", got)
	}

	// -cancel prunes too: an expired job and a served one go with the
	// cancelled one; the new job stays.
	base := srv.JobModifyIndex("default", "served-0")
	put(append([]stage.Job{entry("new", 0, now.Add(time.Hour)), entry("expired", 0, now.Add(-time.Minute)), entry("served-0", base-1, now.Add(time.Hour))}, entry("registry", 0, now.Add(time.Hour))))
	code, _, stderr := runCLI(t, "stage", "-cancel", "registry")
	if code != exitOK || !strings.Contains(stderr, "is no longer staged") || !strings.Contains(stderr, "default/expired (its -ttl passed), default/served-0 (registered since it was staged)") {
		t.Errorf("-cancel: exit %d, stderr %q", code, stderr)
	}
	if got := ids(); !slices.Equal(got, []string{"new"}) {
		t.Errorf("after -cancel the set holds %q, want [new]", got)
	}
	// A -cancel of a job not staged, with nothing to drop, writes nothing.
	_, before, _ := stage.Read(ctx, c, 5*time.Second)
	code, _, stderr = runCLI(t, "stage", "-cancel", "nope")
	if _, after, _ := stage.Read(ctx, c, 5*time.Second); code != exitFailed || !strings.Contains(stderr, "job default/nope is not staged") || after != before {
		t.Errorf("-cancel of no staged job: exit %d, stderr %q, set version %d -> %d", code, stderr, before, after)
	}
}
