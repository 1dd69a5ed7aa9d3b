package main

// prefetch stage end to end: two real agents with discovery on (one on a
// node of class edge, where the job's group can run, one on a node of no
// class), the real dockerd and registries, the fake Nomad answering the
// parse and the guarded registration as transcript F recorded them.

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/discovery"
	"github.com/nomad-prefetch/nomad-prefetch/internal/catalogtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
)

// stageJobHCL is the registry job the tests stage: transcript F's job,
// renamed, its image on the test's in-cluster registry.
const stageJobHCL = `variable "tag" {
  type    = string
  default = "1"
}
job "registry" {
  datacenters = ["dc1"]
  group "g" {
    constraint {
      attribute = "${node.class}"
      value     = "edge"
    }
    task "t" {
      driver = "docker"
      config {
        image = "CLUSTER/stage-reg:${var.tag}"
      }
    }
  }
}
`

// parsedRegistry is what Nomad's parse answers for stageJobHCL with tag:
// transcript F's recorded answer for its job, renamed, with the image.
func parsedRegistry(t *testing.T, image string) map[string]any {
	t.Helper()
	steps := nomadtest.Transcript(t, "F")
	var job map[string]any // step 1: "parse with Variables ...: the image holds v2"
	if err := json.Unmarshal(steps[1].Response.Body, &job); err != nil {
		t.Fatal(err)
	}
	job["ID"], job["Name"] = "registry", "registry"
	task := job["TaskGroups"].([]any)[0].(map[string]any)["Tasks"].([]any)[0].(map[string]any)
	task["Config"].(map[string]any)["image"] = image
	return job
}

func TestStage(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	cluster, cp := startProxied(t, "stage-cluster")
	upstream, up := startProxied(t, "stage-upstream")
	_ = cluster
	id2 := seed(t, upstream.Addr+"/stage-reg:2", "stage-reg-2") // only upstream has it
	t.Cleanup(func() { _ = bed.Remove(ctx, id2) })
	cp.Set(faultproxy.Manifest500, -1) // the in-cluster registry is down
	exp := func(tag string) string { return cp.Addr + "/stage-reg:" + tag }

	srv := fakeCluster(t)
	plain := nomadFixture(t, "node.json")
	edge := nomadFixture(t, "node.json")
	edge["ID"], edge["Name"], edge["NodeClass"] = "0d9e8f70-0000-4000-8000-00000000edge", "edge-1", "edge"
	srv.AddNode(edge)
	// The staged set exists (empty) before the agents start, as once a
	// cluster has staged: their reads of it block, and a write wakes them
	// (transcript A8). What a real Nomad does with a blocking read of a
	// variable that does not exist is not recorded: the fake answers at
	// once, and the agents then back off to a read every 16 s.
	c, err := discovery.NewClient(config.Nomad{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := stage.Update(ctx, c, 5*time.Second, func(s stage.Set, _ error) (stage.Set, error) { return s, nil }); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	start := func(name string, node map[string]any) *agentProc {
		cfg := filepath.Join(dir, name+".hcl")
		writeConfig(t, cfg, daemonSettings()+`
nomad {
  address     = "`+srv.URL+`"
  node_id     = "`+node["ID"].(string)+`"
  infra_image = ""
  rewrite {
    from    = "`+cp.Addr+`/"
    sources = ["`+up.Addr+`/"]
  }
}
`)
		return startAgent(t, cfg, filepath.Join(dir, name+".lock"))
	}
	a, b := start("edge", edge), start("plain", plain)
	for _, p := range []*agentProc{a, b} {
		waitFor(t, "discovery listed", 30*time.Second, func() bool { s := p.status(t); return s.Nomad != nil && s.Nomad.Listed })
	}
	catalogFor(t, catalogtest.Consul, a.addr, b.addr)
	t.Setenv("NOMAD_ADDR", srv.URL)
	t.Setenv("NOMAD_TOKEN", "")

	hcl := strings.ReplaceAll(stageJobHCL, "CLUSTER", cp.Addr)
	jobFile := writeFile(t, "registry.nomad.hcl", hcl)
	for _, tag := range []string{"2", "3"} {
		srv.AddParse(hcl, `tag = "`+tag+`"`+"\n", parsedRegistry(t, exp(tag)))
	}
	staged := func(p *agentProc) (agent.StagedJob, bool) {
		for _, j := range p.status(t).Nomad.Staged.Jobs {
			if j.Job == "default/registry" {
				return j, true
			}
		}
		return agent.StagedJob{}, false
	}

	// A file Nomad can't parse: exit 2 with Nomad's message, the file named.
	bad := writeFile(t, "bad.nomad.hcl", "job \"x\" {\n")
	srv.AddParseError("job \"x\" {\n", "", "Failed to parse job: input.hcl:1,9-10: Unclosed configuration block; There is no closing brace for this block before the end of the file.")
	code, _, stderr := runCLI(t, "stage", "-provider", "consul", bad)
	if code != exitUsage || !strings.Contains(stderr, bad+":1,9-10: Unclosed configuration block") {
		t.Errorf("an unparsable file: exit %d, stderr %q", code, stderr)
	}

	// A -var the file declares no variable for: refused before anything is
	// staged, as nomad job run refuses it (Nomad's parse would ignore it).
	code, _, stderr = runCLI(t, "stage", "-provider", "consul", "-var", "tga=2", jobFile)
	if code != exitUsage || !strings.Contains(stderr, "-var tga: no such variable is declared in the job file") {
		t.Errorf("an undeclared -var: exit %d, stderr %q", code, stderr)
	}

	// A version no node can run (its group wants class gpu): every agent
	// says so, and stage ends at once, exit 1, not registered, rather than
	// waiting out -timeout for agents it set aside (seen on a real Nomad).
	gpu := parsedRegistry(t, exp("2"))
	gpu["TaskGroups"].([]any)[0].(map[string]any)["Constraints"] = []any{map[string]any{"LTarget": "${node.class}", "RTarget": "gpu", "Operand": "="}}
	srv.AddParse(hcl, `tag = "gpu"`+"\n", gpu)
	var stdout string
	code, stdout, stderr = runCLI(t, "stage", "-provider", "consul", "-run", "-timeout", "60s", "-interval", "100ms", "-var", "tag=gpu", jobFile)
	if code != exitFailed || !strings.Contains(stderr, "no node with an agent can run a group of default/registry: each of the 2 agent(s) asked says none fits its node") || strings.Contains(stdout, "Evaluation ID") {
		t.Errorf("a job no node can run: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if srv.JobModifyIndex("default", "registry") != 0 {
		t.Error("the job no node can run was registered")
	}
	if code, _, stderr := runCLI(t, "stage", "-cancel", "registry"); code != exitOK {
		t.Fatalf("stage -cancel: exit %d, %s", code, stderr)
	}

	// No source can serve the image: the gate stays closed until -timeout,
	// exit 1 naming the edge node and the image; the plain node is not
	// waited for; the job is not registered.
	up.Set(faultproxy.Manifest500, -1)
	code, stdout, stderr = runCLI(t, "stage", "-provider", "consul", "-run", "-timeout", "4s", "-interval", "100ms", "-var", "tag=2", jobFile)
	if code != exitFailed || !strings.Contains(stderr, "1 of 1 node(s) still missing it") || !strings.Contains(stderr, exp("2")) || !strings.Contains(stderr, "not waited for") || strings.Contains(stdout, "Evaluation ID") {
		t.Errorf("an image nobody serves: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if srv.JobModifyIndex("default", "registry") != 0 {
		t.Error("the job was registered although the gate never opened")
	}
	if j, ok := staged(b); !ok || j.Fits || len(j.Images) != 0 {
		t.Errorf("the plain node's view of the staged job: %+v (listed %v)", j, ok)
	}
	if _, ok := b.images(t)[exp("2")]; ok {
		t.Error("the node where no group can run keeps the staged image")
	}

	// The upstream heals: staged on the edge node (from the source, tagged
	// as the job names it), then registered, and gone from the staged set.
	up.Set(faultproxy.None, 0)
	code, stdout, stderr = runCLI(t, "stage", "-provider", "consul", "-run", "-timeout", "60s", "-interval", "100ms", "-var", "tag=2", jobFile)
	if code != exitOK || !strings.Contains(stdout, "Job registration successful\nEvaluation ID: ") || !strings.Contains(stderr, "stage: ready: all 1 node(s) that can run default/registry have its images (1 not waited for)") {
		t.Fatalf("stage -run: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	// -run registers the job and then removes it from the staged set; the
	// agent learns the two apart, in either order, and hands the image over
	// from the staged job to the registered one in one publish: it is
	// listed whichever it has learnt (discovery's TestStagedHandoverIsAtomic
	// drives the bad order).
	if img := a.images(t)[exp("2")]; img.State != agent.StatePresent || img.Source != up.Addr+"/stage-reg:2" || img.ImageID != id2 {
		t.Errorf("the edge node's staged image: %+v", img)
	}
	if _, ok := b.images(t)[exp("2")]; ok {
		t.Error("the plain node keeps the staged image")
	}
	registered := srv.JobModifyIndex("default", "registry")
	if registered == 0 {
		t.Fatal("stage -run did not register the job")
	}
	// With the job's source and variables, as nomad job run sends them
	// (Nomad keeps them for its UI; without, a real 2.0.5 answered 404 on
	// the version's /v1/job/:id/submission).
	sub := srv.JobSubmission("default", "registry")
	if vars, _ := sub["Variables"].(string); sub["Source"] != hcl || sub["Format"] != "hcl2" || !strings.Contains(vars, `tag = "2"`) {
		t.Errorf("the registration's submission: %v", sub)
	}
	if set, _, err := stage.Read(ctx, c, 5*time.Second); err != nil || len(set.Jobs) != 0 {
		t.Errorf("after -run the staged set holds %+v (%v)", set.Jobs, err)
	}

	// The next version can't be had; someone else registers the job while
	// stage waits: it ends, refusing to register.
	up.Set(faultproxy.Manifest500, -1)
	var wg sync.WaitGroup
	var code3 int
	var stderr3 string
	wg.Go(func() {
		code3, _, stderr3 = runCLI(t, "stage", "-provider", "consul", "-run", "-timeout", "60s", "-interval", "100ms", "-var", "tag=3", jobFile)
	})
	waitFor(t, "version 3 staged on the edge node", 30*time.Second, func() bool {
		j, ok := staged(a)
		return ok && len(j.Images) == 1 && j.Images[0] == exp("3")
	})
	other := srv.RegisterJob(parsedRegistry(t, exp("2")))
	wg.Wait()
	if code3 != exitFailed || !strings.Contains(stderr3, "was changed by someone else since the stage began") {
		t.Errorf("a job changed while staging: exit %d, stderr:\n%s", code3, stderr3)
	}
	if got := srv.JobModifyIndex("default", "registry"); got != other {
		t.Errorf("the job's modify index is %d after the refused stage, want %d (the other registration's)", got, other)
	}

	// -cancel removes a stage; a second -cancel says there is none.
	code, _, stderr = runCLI(t, "stage", "-provider", "consul", "-timeout", "1s", "-interval", "100ms", "-var", "tag=3", jobFile)
	if code != exitFailed {
		t.Errorf("stage of an image nobody serves: exit %d, stderr %s", code, stderr)
	}
	waitFor(t, "version 3 staged again", 30*time.Second, func() bool { j, ok := staged(a); return ok && j.State == agent.StagedActive })
	if code, _, stderr = runCLI(t, "stage", "-cancel", "registry"); code != exitOK || !strings.Contains(stderr, "is no longer staged") {
		t.Errorf("stage -cancel: exit %d, stderr %q", code, stderr)
	}
	waitFor(t, "the cancelled stage gone from the agent", 30*time.Second, func() bool { _, ok := staged(a); return !ok })
	if _, ok := a.images(t)[exp("3")]; ok {
		t.Error("the cancelled stage's image is still kept")
	}
	if code, _, stderr = runCLI(t, "stage", "-cancel", "registry"); code != exitFailed || !strings.Contains(stderr, "job default/registry is not staged") {
		t.Errorf("a second -cancel: exit %d, stderr %q", code, stderr)
	}
}
