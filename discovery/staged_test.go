package discovery

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/stage"
)

// stagedSpec is a job of two groups: "here" can run on the fixture's node
// (datacenter dc1, no class), "gpu" only on class gpu.
func stagedSpec(image, gpuImage string) stage.Spec {
	return stage.Spec{Datacenters: []string{"dc1"}, Groups: []stage.Group{
		{Name: "here", Tasks: []stage.Task{{Name: "t", Image: image}}},
		{Name: "gpu", Constraints: []stage.Constraint{{LTarget: "${node.class}", Operand: "=", RTarget: "gpu"}}, Tasks: []stage.Task{{Name: "t", Image: gpuImage}}},
	}}
}

func writeStaged(t *testing.T, srv *nomadtest.Server, change func(stage.Set) stage.Set) uint64 {
	t.Helper()
	c, err := NewClient(config.Nomad{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := stage.Update(context.Background(), c, 5*time.Second, func(s stage.Set, bad error) (stage.Set, error) { return change(s), nil })
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func stagedJob(s agent.Discovered, key string) (agent.StagedJob, bool) {
	i := slices.IndexFunc(s.Status.Staged.Jobs, func(j agent.StagedJob) bool { return j.Job == key })
	if i < 0 {
		return agent.StagedJob{}, false
	}
	return s.Status.Staged.Jobs[i], true
}

// A staged job's images are kept where one of its groups can run, said to be
// staged, until a version of the job is registered; a staged set that breaks
// a bound is refused and the last good one kept.
func TestStagedJobs(t *testing.T) {
	t.Parallel()
	srv := fakeNomad(t, nomadtest.Options{})
	srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.1.3"))
	s := runDiscoverer(t, config.Nomad{Address: srv.URL})
	eventually(t, "the registered job's images", func() bool { return slices.Contains(s.refs(), "reg:5000/traefik:v3.1.3") })

	now := time.Now()
	version := writeStaged(t, srv, func(set stage.Set) stage.Set {
		return set.With(stage.Job{Namespace: "default", ID: "registry", StagedAt: now, Expires: now.Add(time.Hour), Spec: stagedSpec("reg:5000/registry:3.0.1", "reg:5000/gpu:1")}, now)
	})
	eventually(t, "the staged image", func() bool { return slices.Contains(s.refs(), "reg:5000/registry:3.0.1") })
	last := s.last()
	if slices.Contains(s.refs(), "reg:5000/gpu:1") {
		t.Error("the image of a group that can't run here is kept")
	}
	if ub := last.UsedBy["reg:5000/registry:3.0.1"]; !slices.Equal(ub, []string{"default/registry/here/t (staged)"}) {
		t.Errorf("used by %q", ub)
	}
	j, ok := stagedJob(last, "default/registry")
	if !ok || j.State != agent.StagedActive || !j.Fits || !slices.Equal(j.Images, []string{"reg:5000/registry:3.0.1"}) || len(j.Blocked) != 0 {
		t.Errorf("staged job %+v (found %v)", j, ok)
	}
	if last.Status.Staged.Version < version || last.Status.Staged.Error != "" {
		t.Errorf("staged status %+v, want version >= %d", last.Status.Staged, version)
	}

	// A bad set (here a 17th job) is refused whole; the last good one stays.
	c, _ := NewClient(config.Nomad{Address: srv.URL})
	bad := `{"format":1,"jobs":[` + strings.Repeat(`{"namespace":"a","id":"b","spec":{"groups":[]}},`, 2) + `{"namespace":"a","id":"b","spec":{"groups":[]}}]}`
	if _, _, err := c.API().Variables().Update(&api.Variable{Namespace: stage.Namespace, Path: stage.Path, Items: api.VariableItems{stage.Item: bad}}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bad set reported", func() bool { return strings.Contains(s.last().Status.Staged.Error, "staged twice") })
	if !slices.Contains(s.refs(), "reg:5000/registry:3.0.1") {
		t.Error("a bad set dropped the last good one's images")
	}

	// Registering the job (any version) ends the stage.
	writeStaged(t, srv, func(set stage.Set) stage.Set {
		return stage.Set{}.With(stage.Job{Namespace: "default", ID: "registry", StagedAt: now, Expires: now.Add(time.Hour), Spec: stagedSpec("reg:5000/registry:3.0.1", "reg:5000/gpu:1")}, now)
	})
	eventually(t, "the good set again", func() bool { return s.last().Status.Staged.Error == "" })
	srv.RegisterJob(webJob(t, "registry", "reg:5000/registry:2.8"))
	eventually(t, "the stage served", func() bool {
		j, ok := stagedJob(s.last(), "default/registry")
		return ok && j.State == agent.StagedRegistered
	})
	if slices.Contains(s.refs(), "reg:5000/registry:3.0.1") || !slices.Contains(s.refs(), "reg:5000/registry:2.8") {
		t.Errorf("after the registration: %q", s.refs())
	}
}

// A staged job's TTL, and a node where no group can run: the state's own
// reduction, with its clock.
func TestStagedJobExpiresAndFits(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	st := newState(config.Nomad{Namespaces: []string{"*"}, AllowedPrefixes: []string{"reg:5000"}}, slog.New(slog.DiscardHandler))
	st.node, st.known = fixtureNode(t), true
	st.now = func() time.Time { return now }
	gpuOnly := stage.Spec{Groups: []stage.Group{stagedSpec("", "reg:5000/gpu:1").Groups[1]}}
	st.staged = stagedState{version: 40, set: stage.Set{Format: stage.Format, Jobs: []stage.Job{
		{Namespace: "default", ID: "soon", Expires: now.Add(time.Minute), Spec: stagedSpec("reg:5000/a:1", "reg:5000/gpu:1")},
		{Namespace: "default", ID: "gpu", Expires: now.Add(time.Hour), Spec: gpuOnly},
		{Namespace: "default", ID: "elsewhere", Expires: now.Add(time.Hour), Spec: stagedSpec("other.io/x:1", "reg:5000/gpu:1")},
	}}}
	d := st.set()
	if !slices.ContainsFunc(d.Images, func(i config.Image) bool { return i.Expected == "reg:5000/a:1" }) {
		t.Errorf("images %+v", d.Images)
	}
	if j, _ := stagedJob(d, "default/gpu"); j.Fits || len(j.Images) != 0 || j.State != agent.StagedActive {
		t.Errorf("gpu-only job here: %+v", j)
	}
	if j, _ := stagedJob(d, "default/elsewhere"); !j.Fits || len(j.Images) != 0 || len(j.Blocked) != 1 || !strings.Contains(j.Blocked[0], "allowed_prefixes") || !strings.Contains(j.Blocked[0], "(staged)") {
		t.Errorf("an image outside allowed_prefixes: %+v", j)
	}
	if !st.staged.nextExpiry.Equal(now.Add(time.Minute)) {
		t.Errorf("next expiry %v", st.staged.nextExpiry)
	}
	now = now.Add(2 * time.Minute)
	d = st.set()
	if j, _ := stagedJob(d, "default/soon"); j.State != agent.StagedExpired || slices.ContainsFunc(d.Images, func(i config.Image) bool { return i.Expected == "reg:5000/a:1" }) {
		t.Errorf("after its TTL: %+v, images %+v", j, d.Images)
	}
}

// The handover from staged to registered is one publish: when the staged
// set drops a job (prefetch stage -run removes it after registering) before
// the Job event of its registration arrives, the agent reads the job and
// lists its registered images in the same set that drops the staged ones.
// The Job stream is frozen (the event never comes) and the job's read held,
// so the order is the bad one every time: the image is listed in every set
// published from its staging on.
func TestStagedHandoverIsAtomic(t *testing.T) {
	t.Parallel()
	srv := fakeNomad(t, nomadtest.Options{})
	srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.1.3"))
	s := runDiscoverer(t, config.Nomad{Address: srv.URL})
	eventually(t, "the jobs listed", func() bool { return slices.Contains(s.refs(), "reg:5000/traefik:v3.1.3") })

	now := time.Now()
	img := "registry.service.consul:5000/traefik:v3.2"
	spec := stage.Spec{Groups: []stage.Group{{Name: "frontend", Tasks: []stage.Task{{Name: "proxy", Image: img}}}}}
	base := srv.JobModifyIndex("default", "web")
	writeStaged(t, srv, func(set stage.Set) stage.Set {
		return set.With(stage.Job{Namespace: "default", ID: "web", Base: base, StagedAt: now, Expires: now.Add(time.Hour), Spec: spec}, now)
	})
	eventually(t, "the staged image", func() bool { return slices.Contains(s.refs(), img) })
	s.mu.Lock()
	from := len(s.all) - 1
	s.mu.Unlock()

	srv.FreezeAll() // the Job stream: the registration's event is not delivered
	waiting, release := srv.HoldJobReads()
	defer release()
	srv.RegisterJob(webJob(t, "web", img))
	removed := writeStaged(t, srv, func(set stage.Set) stage.Set { out, _ := set.Without("default", "web"); return out })
	read := ""
	eventually(t, "the agent to read the dropped job, or to take the set without it", func() bool {
		select {
		case read = <-waiting:
			return true
		default:
			return s.last().Status.Staged.Version >= removed
		}
	})
	if read != "" {
		if last := s.last(); read != "default/web" || last.Status.Staged.Version >= removed || !slices.Contains(s.refs(), img) {
			t.Errorf("while the read of %s is held: staged version %d (the removal is %d), images %q", read, last.Status.Staged.Version, removed, s.refs())
		}
	}
	release()
	eventually(t, "the set without the staged job", func() bool { return s.last().Status.Staged.Version >= removed })

	s.mu.Lock()
	all := slices.Clone(s.all)
	s.mu.Unlock()
	for i, d := range all[from:] {
		var ub []string
		for _, im := range d.Images {
			if im.Expected == img {
				ub = d.UsedBy[img]
			}
		}
		if len(ub) == 0 {
			t.Errorf("set %d after staging (staged set version %d): %s listed under nothing", from+i, d.Status.Staged.Version, img)
		}
	}
	if ub := all[len(all)-1].UsedBy[img]; !slices.Equal(ub, []string{"default/web/frontend/proxy"}) {
		t.Errorf("after the handover %s is used by %q, want the registered job's task", img, ub)
	}

	// A job dropped from the set while still at its Base (a -cancel) is
	// read too, and its staged images go.
	next := "registry.service.consul:5000/traefik:v3.3"
	spec.Groups[0].Tasks[0].Image = next
	base = srv.JobModifyIndex("default", "web")
	writeStaged(t, srv, func(set stage.Set) stage.Set {
		return set.With(stage.Job{Namespace: "default", ID: "web", Base: base, StagedAt: now, Expires: now.Add(time.Hour), Spec: spec}, now)
	})
	eventually(t, "the next staged image", func() bool { return slices.Contains(s.refs(), next) })
	writeStaged(t, srv, func(set stage.Set) stage.Set { out, _ := set.Without("default", "web"); return out })
	eventually(t, "the cancelled stage's image gone", func() bool { return !slices.Contains(s.refs(), next) })
	if !slices.Contains(s.refs(), img) {
		t.Errorf("after the cancel: images %q, want the registered %s kept", s.refs(), img)
	}
}
