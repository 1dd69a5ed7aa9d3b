package discovery

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// fixture decodes one of Nomad 2.0.5's real answers (internal/nomadtest's
// testdata says how they were recorded).
func fixture(t testing.TB, name string, out any) {
	t.Helper()
	b, err := os.ReadFile("../internal/nomadtest/testdata/nomad-2.0.5/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
}

func fixtureNode(t *testing.T) node {
	var n api.Node
	fixture(t, "node.json", &n)
	return newNode(&n)
}

func TestConstraints(t *testing.T) {
	t.Parallel()
	n := node{id: "n1", name: "vm", datacenter: "dc1", pool: "default", class: "",
		attrs: map[string]string{"cpu.arch": "amd64", "driver.docker.version": "20.10.24+dfsg1", "nomad.version": "2.0.5", "nomad.beta": "2.1.0-beta.1", "unique.storage.volumes": "a,b, c"},
		meta:  map[string]string{"rack": "r7", "tier": "edge"}}
	for _, tc := range []struct {
		l, op, r string
		want     verdict
	}{
		{"${node.class}", "=", "gpu", forbids}, // the fixture's workers group
		{"${node.class}", "=", "", allows},
		{"${node.datacenter}", "", "dc1", allows},
		{"${node.pool}", "==", "default", allows},
		{"${node.unique.name}", "is", "vm", allows},
		{"${attr.cpu.arch}", "=", "arm64", forbids},
		{"${attr.cpu.arch}", "!=", "arm64", allows},
		{"${attr.nope}", "!=", "x", allows},
		{"${attr.nope}", "=", "x", forbids},
		{"${meta.rack}", "regexp", "^r[0-9]+$", allows},
		{"${meta.rack}", "regexp", "(", undecided},
		{"${attr.unique.storage.volumes}", "set_contains", "a,c", allows},
		{"${attr.unique.storage.volumes}", "set_contains", "a,d", forbids},
		{"${attr.unique.storage.volumes}", "set_contains_any", "d,b", allows},
		{"${meta.tier}", "is_set", "", allows},
		{"${meta.gpu}", "is_set", "", forbids},
		{"${meta.gpu}", "is_not_set", "", allows},
		{"${meta.rack}", ">", "r5", allows},
		{"${attr.driver.docker.version}", "version", ">= 20.10", allows},
		{"${attr.driver.docker.version}", "version", ">= 20.10, < 21", allows},
		{"${attr.driver.docker.version}", "version", "> 24.0", forbids},
		{"${attr.driver.docker.version}", "semver", ">= 20.10.0", allows},
		{"${attr.nomad.version}", "semver", ">= 1.4.0", allows}, // Nomad's implicit constraint
		{"${attr.nomad.version}", "semver", "< 2.0.0", forbids},
		// Nomad's implicit constraint on a group with a named workload
		// identity (a real 2.0.5's, its nomad/job_endpoint_hook_implicit_identities.go).
		{"${attr.nomad.version}", "semver", ">= 1.7.0-a", allows},
		{"${attr.nomad.version}", "semver", ">= 1.8.0-dev", allows},
		{"${attr.driver.docker.version}", "semver", ">= 20.10.0-rc.1", allows}, // 20.10.24 is past the rc
		{"${attr.driver.docker.version}", "semver", ">= 20.10.24-rc.1, < 20.11", allows},
		{"${attr.nomad.beta}", "semver", ">= 1.0.0", allows},  // 2.1.0-beta.1: above every earlier version
		{"${attr.nomad.beta}", "semver", ">= 2.1.0", forbids}, // and below its release
		{"${attr.nomad.beta}", "semver", "> 2.1.0-alpha.3", allows},
		{"${attr.nomad.beta}", "semver", "2.1.0-beta.1", allows},
		{"${attr.nomad.version}", "semver", "~> 2.0", forbids}, // not a semver operator: malformed, as in Nomad
		// go-version's rule for "version": a prerelease satisfies only a
		// constraint on a prerelease of its own version.
		{"${attr.nomad.beta}", "version", ">= 1.0", forbids},
		{"${attr.nomad.beta}", "version", ">= 2.1.0-alpha", allows},
		{"${attr.nomad.version}", "version", ">= 1.7.0-a", allows},
		{"${attr.driver.docker.version}", "version", "not a constraint", forbids},
		{"${attr.nope}", "version", ">= 1.0", forbids}, // not set: Nomad says no
		{"${node.unique.id}", "distinct_hosts", "", allows},
		{"${NOMAD_whatever}", "=", "x", undecided},
		// A staged host volume, as an agent that does not know the operand
		// sees it (stage.HostVolumeOperand; this one turns it into Volumes).
		{"data", "host_volume", "read_write", undecided},
	} {
		if got := n.check(&api.Constraint{LTarget: tc.l, Operand: tc.op, RTarget: tc.r}); got != tc.want {
			t.Errorf("%s %s %q: got %d, want %d", tc.l, tc.op, tc.r, got, tc.want)
		}
	}
}

func TestInterpolate(t *testing.T) {
	t.Parallel()
	n := node{datacenter: "dc1", attrs: map[string]string{"cpu.arch": "arm64"}, meta: map[string]string{"reg": "10.0.0.5:5000"}}
	meta := map[string]string{"bbver": "1.36", "Tag": "v2"}
	for in, want := range map[string]string{
		"busybox:${NOMAD_META_bbver}":         "busybox:1.36",
		"busybox:${NOMAD_META_TAG}":           "busybox:v2",
		"${meta.reg}/app:${attr.cpu.arch}":    "10.0.0.5:5000/app:arm64",
		"app:${NOMAD_envoy_version}":          "app:${NOMAD_envoy_version}",
		"app:${node.datacenter}-${meta.nope}": "app:dc1-${meta.nope}",
		"plain:1":                             "plain:1",
		"unterminated:${NOMAD_META_bbver":     "unterminated:${NOMAD_META_bbver",
	} {
		if got := interpolate(in, n, meta); got != want {
			t.Errorf("interpolate(%q): got %q, want %q", in, got, want)
		}
	}
}

// The real web job on the real node: the proxy's image, the sidecar's
// (interpolated from task meta, kept but reported for force_pull), not the
// gpu group's; and the rewrite gives the sources.
func TestImagesOfFixtureJob(t *testing.T) {
	t.Parallel()
	var job api.Job
	fixture(t, "job-web.json", &job)
	n := fixtureNode(t)
	r := compile(config.Nomad{Namespaces: []string{"*"}, Rewrites: []config.Rewrite{
		{From: "registry.service.consul:5000/", Sources: []string{"docker.io/library/", "ghcr.io/acme/"}},
	}})
	ji := r.imagesOf(&job, n)
	want := []found{
		{expected: "registry.service.consul:5000/traefik:v3.1.3", sources: []string{"docker.io/library/traefik:v3.1.3", "ghcr.io/acme/traefik:v3.1.3"}, usedBy: "default/web/frontend/proxy", rank: 158},
		{expected: "docker.io/library/busybox:1.36", usedBy: "default/web/frontend/sidecar", rank: 158},
	}
	if !reflect.DeepEqual(ji.images, want) {
		t.Errorf("got %+v\nwant %+v", ji.images, want)
	}
	if len(ji.problems) != 1 || !strings.Contains(ji.problems[0], "force_pull") || !strings.Contains(ji.problems[0], "default/web/frontend/sidecar (version 1)") {
		t.Errorf("problems: %q", ji.problems)
	}

	// Include, exclude; a datacenter and a pool that don't match; stopped.
	r.include = []*regexp.Regexp{glob("registry.service.consul:5000/*")}
	if ji := r.imagesOf(&job, n); len(ji.images) != 1 {
		t.Errorf("include: got %d images, want the in-cluster one", len(ji.images))
	}
	r.include, r.exclude = nil, []*regexp.Regexp{glob("*:v3.1.3")}
	if ji := r.imagesOf(&job, n); len(ji.images) != 1 || ji.images[0].expected != "docker.io/library/busybox:1.36" {
		t.Errorf("exclude: got %+v", ji.images)
	}
	other := job
	other.Datacenters = []string{"eu-*"}
	if ji := r.imagesOf(&other, n); len(ji.images) != 0 {
		t.Errorf("datacenter eu-*: got %d images, want none", len(ji.images))
	}
	pool := "gpu-pool"
	other = job
	other.NodePool = &pool
	if ji := r.imagesOf(&other, n); len(ji.images) != 0 {
		t.Errorf("node pool gpu-pool: got %d images, want none", len(ji.images))
	}
	all := "all"
	other.NodePool = &all
	if ji := r.imagesOf(&other, n); len(ji.images) == 0 {
		t.Errorf("node pool all: got no images")
	}
	stop := true
	other = job
	other.Stop = &stop
	if ji := r.imagesOf(&other, n); len(ji.images) != 0 {
		t.Errorf("stopped: got %d images, want none", len(ji.images))
	}
}

func TestBadImages(t *testing.T) {
	t.Parallel()
	n := fixtureNode(t)
	job := func(image string) *api.Job {
		id, ns, group := "j", "default", "g"
		return &api.Job{ID: &id, Namespace: &ns, TaskGroups: []*api.TaskGroup{{Name: &group, Tasks: []*api.Task{{Name: "t", Driver: "docker", Config: map[string]any{"image": image}}}}}}
	}
	r := compile(config.Nomad{Namespaces: []string{"*"}})
	for image, want := range map[string]string{
		"Not A Ref!":                    "is not a valid image reference",
		"envoy:v${NOMAD_envoy_version}": "holds an interpolation this agent can't resolve",
		"":                              "no image in the task's config",
		"busybox":                       "no tag or the tag latest",
	} {
		ji := r.imagesOf(job(image), n)
		if len(ji.problems) != 1 || !strings.Contains(ji.problems[0], want) {
			t.Errorf("%q: problems %q, want one saying %q", image, ji.problems, want)
		}
	}
	// A job of hundreds of tasks is simply many images.
	many := job("app:1")
	for i := range 300 {
		name := "t" + strings.Repeat("x", i%5)
		many.TaskGroups[0].Tasks = append(many.TaskGroups[0].Tasks, &api.Task{Name: name, Driver: "docker", Config: map[string]any{"image": "reg:5000/app" + string(rune('a'+i%26)) + ":1"}})
	}
	if ji := r.imagesOf(many, n); len(ji.images) != 301 || len(ji.problems) != 0 {
		t.Errorf("300 tasks: got %d images, %d problems", len(ji.images), len(ji.problems))
	}
}

// sets collects what a Discoverer reports.
type sets struct {
	mu  sync.Mutex
	all []agent.Discovered
}

func (s *sets) found(d agent.Discovered) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all = append(s.all, d)
}

func (s *sets) last() agent.Discovered {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.all) == 0 {
		return agent.Discovered{}
	}
	return s.all[len(s.all)-1]
}

func (s *sets) refs() []string {
	var out []string
	for _, img := range s.last().Images {
		out = append(out, img.Expected)
	}
	return out
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fakeNomad(t *testing.T, opts nomadtest.Options) *nomadtest.Server {
	t.Helper()
	s, err := nomadtest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	var node map[string]any
	fixture(t, "node.json", &node)
	s.SetNode(node)
	return s
}

func webJob(t testing.TB, id, image string) map[string]any {
	t.Helper()
	var job map[string]any
	fixture(t, "job-web.json", &job)
	job["ID"], job["Name"] = id, id
	proxy := job["TaskGroups"].([]any)[0].(map[string]any)["Tasks"].([]any)[0].(map[string]any)
	proxy["Config"].(map[string]any)["image"] = image
	return job
}

func runDiscoverer(t *testing.T, settings config.Nomad) *sets {
	t.Helper()
	return runDiscovererWith(t, settings, nil)
}

func runDiscovererWith(t *testing.T, settings config.Nomad, log *slog.Logger) *sets {
	t.Helper()
	if len(settings.Namespaces) == 0 {
		settings.Namespaces = []string{"*"}
	}
	off := ""
	settings.InfraImage = &off
	s := &sets{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d := &Discoverer{Retry: fastRetry, Log: log}
	go func() { defer close(done); d.Run(ctx, settings, s.found) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return s
}

func TestFollowJobs(t *testing.T) {
	t.Parallel()
	srv := fakeNomad(t, nomadtest.Options{BufferSize: 5})
	srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.1.3"))
	s := runDiscoverer(t, config.Nomad{Address: srv.URL})
	eventually(t, "the listed job's images", func() bool {
		return slices.Equal(s.refs(), []string{"docker.io/library/busybox:1.36", "reg:5000/traefik:v3.1.3"})
	})
	if st := s.last().Status; st.Node != "vm" || st.Jobs != 1 || !st.Live || st.Error != "" || st.Index == 0 {
		t.Errorf("status: %+v", st)
	}
	if ub := s.last().UsedBy["reg:5000/traefik:v3.1.3"]; !slices.Equal(ub, []string{"default/web/frontend/proxy"}) {
		t.Errorf("used by %q", ub)
	}

	// An update to a new tag: the new image, not the old.
	srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.2.0"))
	eventually(t, "the update's image", func() bool { return slices.Contains(s.refs(), "reg:5000/traefik:v3.2.0") })
	if slices.Contains(s.refs(), "reg:5000/traefik:v3.1.3") {
		t.Error("the old image is still wanted after the update")
	}

	// A second job, stopped, then purged.
	srv.RegisterJob(webJob(t, "api", "reg:5000/api:1"))
	eventually(t, "api's image", func() bool { return slices.Contains(s.refs(), "reg:5000/api:1") })
	srv.StopJob("default", "api")
	eventually(t, "api's image dropped on stop", func() bool { return !slices.Contains(s.refs(), "reg:5000/api:1") })
	srv.RegisterJob(webJob(t, "api", "reg:5000/api:2"))
	eventually(t, "api again", func() bool { return slices.Contains(s.refs(), "reg:5000/api:2") })
	srv.PurgeJob("default", "api")
	eventually(t, "api's image dropped on purge", func() bool { return !slices.Contains(s.refs(), "reg:5000/api:2") })

	// The stream drops while a job is registered and its event falls out of
	// Nomad's buffer: a gap, so every job is listed again, and it is found.
	srv.FreezeAll()
	srv.RegisterJob(webJob(t, "late", "reg:5000/late:1"))
	for range 10 {
		srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.2.0"))
	}
	srv.DropAll()
	eventually(t, "the job whose event was lost, found by a new list", func() bool { return slices.Contains(s.refs(), "reg:5000/late:1") })
}

// The stream going down and coming back shows in the status at once, with
// the jobs kept meanwhile and no new list needed.
func TestStreamDownAndBack(t *testing.T) {
	t.Parallel()
	srv := fakeNomad(t, nomadtest.Options{})
	srv.RegisterJob(webJob(t, "web", "reg:5000/traefik:v3.1.3"))
	s := runDiscoverer(t, config.Nomad{Address: srv.URL})
	eventually(t, "the stream live", func() bool { return s.last().Status.Live })
	srv.SetFailStatus(http.StatusInternalServerError)
	srv.DropAll()
	eventually(t, "the stream reported down", func() bool {
		st := s.last().Status
		return !st.Live && strings.Contains(st.Error, "the Job event stream is down") && strings.Contains(st.Error, "500") && st.ErrorSince != nil
	})
	if !slices.Contains(s.refs(), "reg:5000/traefik:v3.1.3") {
		t.Error("the job's image was dropped while the stream was down")
	}
	srv.SetFailStatus(0)
	eventually(t, "the stream back", func() bool { st := s.last().Status; return st.Live && st.Error == "" })
}

func TestNomadRefusesOrIsDown(t *testing.T) {
	t.Parallel()
	srv := fakeNomad(t, nomadtest.Options{Authorize: func(string) bool { return false }})
	s := runDiscoverer(t, config.Nomad{Address: srv.URL})
	eventually(t, "the refusal reported", func() bool {
		st := s.last().Status
		return strings.Contains(st.Error, "403") && strings.Contains(st.Error, "ACL policy") && st.ErrorSince != nil && !st.Live
	})

	s = runDiscoverer(t, config.Nomad{Address: "http://127.0.0.1:1"})
	eventually(t, "Nomad down reported", func() bool {
		return strings.Contains(s.last().Status.Error, "connection refused")
	})
	if len(s.last().Images) != 0 {
		t.Errorf("images with Nomad down from the start: %v", s.last().Images)
	}
}

var fastRetry = backoffPolicy(100*time.Millisecond, time.Second)

func backoffPolicy(lo, hi time.Duration) backoff.Policy {
	return backoff.Policy{Min: lo, Max: hi, Jitter: 0.2}
}
