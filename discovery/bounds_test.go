package discovery

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// versionConstraint is one this agent can't decide, an operator newer than
// it (Nomad's recorded constraint shape: LTarget, Operand, RTarget).
func versionConstraint() map[string]any {
	return map[string]any{"LTarget": "${attr.driver.docker.version}", "Operand": "semver_next", "RTarget": ">= 20.10.0"}
}

// Nomad 2.0.5 adds ${attr.nomad.version} semver ">= 1.7.0-a" to every group
// with a named workload identity (recorded: `nomad job inspect` of such a
// job on a real 2.0.5 agent, whose node reports nomad.version 2.0.5, as the
// node fixture does). Its images are kept: the prerelease constraint is
// decided, not skipped as undecided.
func TestImplicitIdentityConstraintDecided(t *testing.T) {
	t.Parallel()
	var job api.Job
	fixture(t, "job-web.json", &job)
	n := fixtureNode(t)
	r := compile(config.Nomad{Namespaces: []string{"*"}})
	implicit := &api.Constraint{LTarget: "${attr.nomad.version}", Operand: "semver", RTarget: ">= 1.7.0-a"}
	all := r.imagesOf(&job, n)
	j := job
	groups := slices.Clone(job.TaskGroups)
	for i, g := range groups {
		c := *g
		c.Constraints = append(slices.Clone(g.Constraints), implicit)
		groups[i] = &c
	}
	j.TaskGroups = groups
	ji := r.imagesOf(&j, n)
	if !slices.Equal(ji.problems, all.problems) || len(ji.images) != len(all.images) || len(ji.images) == 0 {
		t.Errorf("with the implicit constraint: got %d images, problems %q; want the %d images and problems %q without it", len(ji.images), ji.problems, len(all.images), all.problems)
	}
	later := *implicit
	later.RTarget = ">= 2.1.0-a" // a later Nomad's: this node can't run it
	for _, g := range groups {
		g.Constraints = []*api.Constraint{&later}
	}
	if ji := r.imagesOf(&j, n); len(ji.images) != 0 || len(ji.problems) != 0 {
		t.Errorf("a constraint on a later Nomad: got %d images, problems %q; want none, silently", len(ji.images), ji.problems)
	}
}

// A job, or a group, whose placement can't be decided here is skipped and
// reported, unless include_undecided; a decided "no" still wins.
func TestUndecidedPlacement(t *testing.T) {
	t.Parallel()
	var job api.Job
	fixture(t, "job-web.json", &job)
	n := fixtureNode(t)
	undecided := &api.Constraint{LTarget: "${attr.driver.docker.version}", Operand: "semver_next", RTarget: ">= 20.10.0"}
	r := compile(config.Nomad{Namespaces: []string{"*"}})

	j := job
	j.Constraints = []*api.Constraint{undecided}
	ji := r.imagesOf(&j, n)
	if len(ji.images) != 0 || len(ji.problems) != 1 || !strings.Contains(ji.problems[0], `default/web (version 1): placement can't be decided here (constraint ${attr.driver.docker.version} semver_next ">= 20.10.0")`) ||
		!strings.Contains(ji.problems[0], "include_undecided = true") {
		t.Errorf("undecided job: got %d images, problems %q", len(ji.images), ji.problems)
	}
	j.Constraints = []*api.Constraint{undecided, {LTarget: "${attr.cpu.arch}", Operand: "=", RTarget: "s390x"}}
	if ji := r.imagesOf(&j, n); len(ji.images) != 0 || len(ji.problems) != 0 {
		t.Errorf("undecided and forbidden: got %d images, problems %q; want none, silently", len(ji.images), ji.problems)
	}

	// A task's undecided constraint skips its group only.
	j = job
	groups := slices.Clone(job.TaskGroups)
	front := *groups[0]
	front.Tasks = slices.Clone(front.Tasks)
	side := *front.Tasks[1]
	side.Constraints = []*api.Constraint{undecided}
	front.Tasks[1] = &side
	groups[0] = &front
	j.TaskGroups = groups
	if ji := r.imagesOf(&j, n); len(ji.images) != 0 || len(ji.problems) != 1 || !strings.Contains(ji.problems[0], "default/web/frontend (version 1): placement can't be decided") {
		t.Errorf("undecided task: got %d images, problems %q", len(ji.images), ji.problems)
	}

	r.includeUndecided = true
	if ji := r.imagesOf(&j, n); len(ji.images) != 2 {
		t.Errorf("include_undecided: got %d images, want the frontend's 2", len(ji.images))
	}
}

// With allowed_prefixes, an image from anywhere else is skipped and
// reported.
func TestAllowedPrefixes(t *testing.T) {
	t.Parallel()
	var job api.Job
	fixture(t, "job-web.json", &job)
	r := compile(config.Nomad{Namespaces: []string{"*"}, AllowedPrefixes: []string{"registry.service.consul:5000"}})
	ji := r.imagesOf(&job, fixtureNode(t))
	if len(ji.images) != 1 || ji.images[0].expected != "registry.service.consul:5000/traefik:v3.1.3" {
		t.Errorf("got %+v, want only the in-cluster registry's image", ji.images)
	}
	if !slices.ContainsFunc(ji.problems, func(p string) bool {
		return strings.Contains(p, "image docker.io/library/busybox:1.36 is not under nomad allowed_prefixes (registry.service.consul:5000): skipped")
	}) {
		t.Errorf("problems %q lack the busybox image's", ji.problems)
	}
}

func image(ref, usedBy string, rank uint64) found {
	return found{expected: ref, usedBy: usedBy, rank: rank}
}

// max_images keeps the oldest jobs' images, lists the rest in order, logs
// once when it starts leaving images out and once when it stops, and what
// it remembers per job does not grow with re-registrations.
func TestStateLimit(t *testing.T) {
	t.Parallel()
	var logs testbed.Buffer
	st := newState(config.Nomad{Namespaces: []string{"*"}, MaxImages: 3, InfraImage: new(string)}, slog.New(slog.NewTextHandler(&logs, nil)))
	st.put("default/old", jobImages{images: []found{image("r/old-b:1", "default/old/g/b", 10), image("r/old-a:1", "default/old/g/a", 10)}})
	for i := range 30 {
		key := fmt.Sprintf("default/new-%02d", i)
		st.put(key, jobImages{images: []found{image(fmt.Sprintf("r/new-%02d:1", i), key+"/g/t", uint64(100+i)), image("r/old-a:1", key+"/g/s", uint64(100+i))}})
	}
	d := st.set()
	var refs []string
	for _, img := range d.Images {
		refs = append(refs, img.Expected)
	}
	if want := []string{"r/new-00:1", "r/old-a:1", "r/old-b:1"}; !slices.Equal(refs, want) {
		t.Errorf("kept %q, want %q", refs, want)
	}
	if st := d.Status; st.MaxImages != 3 || st.LeftOut != 29 || len(st.LeftOutImages) != maxLeftOutShown ||
		st.LeftOutImages[0] != "r/new-01:1 (used by default/new-01/g/t): over nomad max_images (3)" || !strings.HasPrefix(st.LeftOutImages[19], "r/new-20:1 ") {
		t.Errorf("status: %+v", st)
	}
	if ub := d.UsedBy["r/old-a:1"]; len(ub) != maxUsedBy+1 || ub[0] != "default/new-00/g/s" || ub[maxUsedBy] != "and 21 more" {
		t.Errorf("used by of the shared image: %q", ub)
	}
	for range 3 {
		st.set()
	}
	if n := strings.Count(logs.String(), "more images than nomad max_images"); n != 1 {
		t.Errorf("logged the limit %d times, want once:\n%s", n, logs.String())
	}

	for i := 1; i < 30; i++ {
		st.remove("default", fmt.Sprintf("new-%02d", i))
	}
	if d := st.set(); d.Status.LeftOut != 0 || len(d.Status.LeftOutImages) != 0 || len(d.Images) != 3 {
		t.Errorf("under the limit: %+v", d.Status)
	}
	if !strings.Contains(logs.String(), "every image the jobs name is kept again") {
		t.Errorf("the end of the limit is not logged:\n%s", logs.String())
	}

	// A job re-registered again and again with the same problem: logged
	// once, remembered once per job, bounded in the status; a new problem
	// is logged.
	noisy := func() int {
		n := 0
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "job=default/noisy") {
				n++
			}
		}
		return n
	}
	before := noisy()
	for v := range 200 {
		st.put("default/noisy", jobImages{version: uint64(v), problems: []string{fmt.Sprintf("default/noisy/g/t (version %d): %s", v, strings.Repeat("x", 2000))}})
	}
	if n := noisy() - before; n != 1 {
		t.Errorf("200 versions with one problem logged %d times, want once", n)
	}
	if len(st.reported) != 1 || len(st.problems[len(st.problems)-1]) > maxProblemLen+3 {
		t.Errorf("after 200 versions: %d jobs remembered, the last problem %d bytes long", len(st.reported), len(st.problems[len(st.problems)-1]))
	}
	for v := range 200 {
		st.put("default/noisy", jobImages{version: uint64(v), problems: []string{fmt.Sprintf("default/noisy/g/t (version %d): problem %d", v, v)}})
	}
	if len(st.problems) != maxProblems {
		t.Errorf("200 different problems: %d listed, want the newest %d", len(st.problems), maxProblems)
	}
	st.remove("default", "noisy")
	if len(st.reported) != 0 {
		t.Errorf("a removed job's problems are still remembered")
	}
}

// A flood of jobs against the fake Nomad, with an unplaceable one: the node
// keeps max_images images, the oldest jobs' (an update keeps a job's place),
// says which are left out, skips the unplaceable job, and two agents of the
// same jobs leave out the same images.
func TestFloodOfJobs(t *testing.T) {
	t.Parallel()
	srv := fakeNomad(t, nomadtest.Options{BufferSize: 500})
	srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.1.3")) // the oldest job: traefik and busybox:1.36
	unplaceable := webJob(t, "unplaceable", "reg:5000/unplaceable:1")
	unplaceable["Constraints"] = []any{versionConstraint()}
	srv.RegisterJob(unplaceable)
	for i := range 40 {
		srv.RegisterJob(webJob(t, fmt.Sprintf("flood-%02d", i), fmt.Sprintf("reg:5000/flood-%02d:1", i)))
	}
	var logs testbed.Buffer
	settings := config.Nomad{Address: srv.URL, MaxImages: 5}
	s := runDiscovererWith(t, settings, slog.New(slog.NewTextHandler(&logs, nil)))
	other := runDiscoverer(t, settings)
	eventually(t, "the flood listed", func() bool { return s.last().Status.Listed && other.last().Status.Listed })
	want := []string{"docker.io/library/busybox:1.36", "reg:5000/flood-00:1", "reg:5000/flood-01:1", "reg:5000/flood-02:1", "reg:5000/traefik:v3.1.3"}
	if got := s.refs(); !slices.Equal(got, want) {
		t.Errorf("kept %q, want %q", got, want)
	}
	st := s.last().Status
	if st.MaxImages != 5 || st.LeftOut != 37 || st.Images != 5 || len(st.LeftOutImages) != maxLeftOutShown ||
		st.LeftOutImages[0] != "reg:5000/flood-03:1 (used by default/flood-03/frontend/proxy): over nomad max_images (5)" {
		t.Errorf("status: max %d, images %d, left out %d: %q", st.MaxImages, st.Images, st.LeftOut, st.LeftOutImages)
	}
	if !slices.ContainsFunc(st.Problems, func(p string) bool {
		return strings.Contains(p, "default/unplaceable (version 0): placement can't be decided here")
	}) {
		t.Errorf("the unplaceable job is not reported: %q", st.Problems)
	}
	if o := other.last(); !slices.Equal(other.refs(), s.refs()) || !slices.Equal(o.Status.LeftOutImages, st.LeftOutImages) {
		t.Errorf("two agents of the same jobs disagree:\n%q %q\n%q %q", s.refs(), st.LeftOutImages, other.refs(), o.Status.LeftOutImages)
	}

	// More of the flood, on the stream: still left out. The oldest job's
	// update keeps its place.
	for i := 40; i < 50; i++ {
		srv.RegisterJob(webJob(t, fmt.Sprintf("flood-%02d", i), fmt.Sprintf("reg:5000/flood-%02d:1", i)))
	}
	srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.2.0"))
	eventually(t, "the update applied", func() bool { return slices.Contains(s.refs(), "reg:5000/traefik:v3.2.0") })
	eventually(t, "the stream's flood counted", func() bool { return s.last().Status.LeftOut == 47 })
	if got := s.refs(); len(got) != 5 || slices.Contains(got, "reg:5000/traefik:v3.1.3") || slices.ContainsFunc(got, func(r string) bool { return strings.Contains(r, "flood-4") }) {
		t.Errorf("after the stream's flood and the update: kept %q", got)
	}
	if n := strings.Count(logs.String(), "more images than nomad max_images"); n != 1 {
		t.Errorf("logged the limit %d times, want once:\n%s", n, logs.String())
	}

	// The oldest job purged: the next in line comes in (busybox stays:
	// every flood job's sidecar names it too).
	srv.PurgeJob("default", "web")
	eventually(t, "the next in line kept", func() bool { return slices.Contains(s.refs(), "reg:5000/flood-03:1") })
	if got, want := s.refs(), []string{"docker.io/library/busybox:1.36", "reg:5000/flood-00:1", "reg:5000/flood-01:1", "reg:5000/flood-02:1", "reg:5000/flood-03:1"}; !slices.Equal(got, want) {
		t.Errorf("after the purge: kept %q, want %q", got, want)
	}
	if st := s.last().Status; st.LeftOut != 46 || !strings.HasPrefix(st.LeftOutImages[0], "reg:5000/flood-04:1 ") {
		t.Errorf("after the purge: left out %d, first %q", st.LeftOut, st.LeftOutImages[0])
	}

	// include_undecided keeps the unplaceable job's image; allowed_prefixes
	// keeps only what it allows, and says why the rest is skipped.
	inc := runDiscoverer(t, config.Nomad{Address: srv.URL, MaxImages: 100, IncludeUndecided: true})
	eventually(t, "include_undecided", func() bool { return slices.Contains(inc.refs(), "reg:5000/unplaceable:1") })
	allow := runDiscoverer(t, config.Nomad{Address: srv.URL, AllowedPrefixes: []string{"docker.io/library/"}})
	eventually(t, "allowed_prefixes", func() bool { return allow.last().Status.Listed })
	if got := allow.refs(); !slices.Equal(got, []string{"docker.io/library/busybox:1.36"}) {
		t.Errorf("allowed_prefixes: kept %q", got)
	}
	if p := allow.last().Status.Problems; !slices.ContainsFunc(p, func(p string) bool { return strings.Contains(p, "is not under nomad allowed_prefixes") }) {
		t.Errorf("allowed_prefixes: problems %q", p)
	}
}
