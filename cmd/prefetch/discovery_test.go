package main

// prefetch run with discovery, end to end: the real dockerd and registries,
// the fake Nomad of internal/nomadtest answering in Nomad 2.0.5's shapes
// (its testdata holds the real answers the jobs and node here start from).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

func nomadFixture(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "internal", "nomadtest", "testdata", "nomad-2.0.5", name))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// fakeCluster is a fake Nomad agent of the fixture's node (dc1, pool
// default, no class, amd64).
func fakeCluster(t *testing.T) *nomadtest.Server {
	t.Helper()
	return fakeClusterWith(t, nomadtest.Options{})
}

// fakeClusterWith is fakeCluster with opts.
func fakeClusterWith(t *testing.T, opts nomadtest.Options) *nomadtest.Server {
	t.Helper()
	srv, err := nomadtest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	srv.SetNode(nomadFixture(t, "node.json"))
	return srv
}

// webJob is the fixture's web job as id, its proxy task running proxy and
// its sidecar side (an image interpolated from the task's meta: bbver is
// 1.36). Its workers group is constrained to node class gpu.
func webJob(t *testing.T, id, proxy, side string) map[string]any {
	t.Helper()
	job := nomadFixture(t, "job-web.json")
	job["ID"], job["Name"] = id, id
	tasks := job["TaskGroups"].([]any)[0].(map[string]any)["Tasks"].([]any)
	tasks[0].(map[string]any)["Config"].(map[string]any)["image"] = proxy
	sidecar := tasks[1].(map[string]any)["Config"].(map[string]any)
	sidecar["image"], sidecar["force_pull"] = side, false
	return job
}

func (a *agentProc) images(t *testing.T) map[string]agent.ImageStatus {
	t.Helper()
	out := map[string]agent.ImageStatus{}
	for _, img := range a.status(t).Images {
		out[img.Expected] = img
	}
	return out
}

func TestRunDiscoversNomadJobs(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	cluster, cp := startProxied(t, "disc-cluster")
	upstream, up := startProxied(t, "disc-upstream")
	appID := seed(t, cluster.Addr+"/app:1", "disc-app-1")
	sideID := seed(t, cluster.Addr+"/side:1.36", "disc-side")
	app2ID := seed(t, upstream.Addr+"/app:2", "disc-app-2") // only upstream has it
	staticID := seed(t, cluster.Addr+"/static:1", "disc-static")
	exp := func(repo string) string { return cp.Addr + "/" + repo }
	t.Cleanup(func() {
		_ = bed.Remove(ctx, appID, sideID, app2ID, staticID)
	})

	srv := fakeCluster(t)
	srv.RegisterJob(webJob(t, "web", exp("app:1"), cp.Addr+"/side:${NOMAD_META_bbver}"))
	other := webJob(t, "elsewhere", exp("elsewhere:1"), exp("elsewhere-side:1"))
	other["Datacenters"] = []any{"eu-*"}
	srv.RegisterJob(other)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	cfg := daemonSettings() + fmt.Sprintf(`
nomad {
  address     = %q
  infra_image = ""
  rewrite {
    from    = "%s/"
    sources = ["%s/"]
  }
}
`, srv.URL, cp.Addr, up.Addr) +
		imageBlock("static", exp("static:1")) +
		imageBlock("pinned-app", exp("app:1")) // a config entry for a discovered image wins
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))

	waitFor(t, "the job's images present, with no config entry for the sidecar", 30*time.Second, func() bool {
		imgs := a.images(t)
		return imgs[exp("side:1.36")].State == agent.StatePresent && imgs[exp("app:1")].State == agent.StatePresent && imgs[exp("static:1")].State == agent.StatePresent
	})
	imgs := a.images(t)
	if img := imgs[exp("side:1.36")]; img.Origin != agent.OriginNomad || !slices.Equal(img.UsedBy, []string{"default/web/frontend/sidecar"}) || img.ImageID != sideID {
		t.Errorf("sidecar: got %+v", img)
	}
	if img := imgs[exp("app:1")]; img.Origin != agent.OriginConfig || img.Name != "pinned-app" || !slices.Equal(img.UsedBy, []string{"default/web/frontend/proxy"}) {
		t.Errorf("the config entry for the proxy's image: got %+v", img)
	}
	for ref := range imgs {
		if strings.Contains(ref, "worker") || strings.Contains(ref, "elsewhere") {
			t.Errorf("%s is kept, but its group is constrained to class gpu or its job to datacenters eu-*", ref)
		}
	}
	if code, body := a.get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d %s", code, body)
	}
	code, stdout, _ := runCLI(t, "status", "-addr", a.addr)
	for _, want := range []string{"nomad: following the jobs of node vm: 1 job(s) name 2 image(s) kept here", "ORIGIN", "nomad   default/web/frontend/sidecar"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("prefetch status (exit %d) lacks %q:\n%s", code, want, stdout)
		}
	}

	// The job is updated to a tag the in-cluster registry doesn't have: the
	// new image comes at once (no resync for an hour), from the rewrite's
	// source, retagged as the job names it.
	srv.RegisterJob(webJob(t, "web", exp("app:2"), cp.Addr+"/side:${NOMAD_META_bbver}"))
	waitFor(t, "the update's image present", 30*time.Second, func() bool {
		return a.images(t)[exp("app:2")].State == agent.StatePresent
	})
	if img := a.images(t)[exp("app:2")]; img.Source != up.Addr+"/app:2" || img.ImageID != app2ID {
		t.Errorf("app:2: got %+v, want it retagged from %s", img, up.Addr+"/app:2")
	}
	if got := a.metric(t, "prefetch_discovered_images"); got != 2 {
		t.Errorf("prefetch_discovered_images: %v, want 2", got)
	}

	// Nomad's history is rebuilt (a restored snapshot: indexes start lower):
	// every job is listed again, and no image is lost meanwhile.
	srv.Reset(2)
	srv.RegisterJob(webJob(t, "web2", exp("app:2"), cp.Addr+"/side:${NOMAD_META_bbver}"))
	waitFor(t, "a new list after the rebuilt history", 30*time.Second, func() bool {
		return strings.Contains(a.stderr.String(), "listing every job again") && a.status(t).Nomad.Jobs == 2
	})
	if _, ok := a.images(t)[exp("side:1.36")]; !ok {
		t.Error("a discovered image was dropped by a history reset")
	}
	srv.PurgeJob("default", "web2")

	// The job purged: its images are no longer kept (and not deleted).
	srv.PurgeJob("default", "web")
	waitFor(t, "the purged job's images no longer kept", 30*time.Second, func() bool {
		_, ok := a.images(t)[exp("side:1.36")]
		return !ok
	})
	if _, err := bed.Client.ImageInspect(ctx, exp("side:1.36")); err != nil {
		t.Errorf("the purged job's image was deleted: %v", err)
	}
	if !strings.Contains(a.stderr.String(), `"msg":"images discovered from Nomad"`) {
		t.Error("the discovered sets were not logged")
	}
}

// Nomad down at start: the config's images are served, the status and a
// log line say why discovery can't work, /readyz waits for the first list.
func TestRunNomadDownAtStart(t *testing.T) {
	testbed.Need(t, bed)
	reg, p := startProxied(t, "disc-down")
	id := seed(t, reg.Addr+"/static:1", "disc-down-static")
	t.Cleanup(func() { _ = bed.Remove(context.Background(), id) })
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	// A socket nobody listens on (a free TCP port could be taken meanwhile).
	nomadAddr := "unix://" + filepath.Join(dir, "no-nomad.sock")
	cfg := daemonSettings() + fmt.Sprintf("nomad {\n  address = %q\n  infra_image = \"\"\n}\n", nomadAddr) + imageBlock("static", p.Addr+"/static:1")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))
	waitFor(t, "the static image present", 30*time.Second, wantState(t, a, "static", agent.StatePresent))
	waitFor(t, "discovery's error reported", 30*time.Second, func() bool {
		s := a.status(t)
		return s.Nomad != nil && strings.Contains(s.Nomad.Error, "no-nomad.sock") && s.Nomad.ErrorSince != nil
	})
	if code, body := a.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "discovering: listing Nomad's jobs") {
		t.Errorf("/readyz: got %d %q, want 503 until Nomad's jobs were listed", code, body)
	}
	if !strings.Contains(a.stderr.String(), `"msg":"discovery: Nomad can't be followed; the last known images are kept"`) {
		t.Error("no log line says discovery can't follow Nomad")
	}
}

// A job naming an image nobody can pull: once its fetch failed it does not
// hold /readyz (any job submitter could otherwise hold every node's), until
// the nomad block says hold_readiness = true.
func TestRunDiscoveredImageDoesNotHoldReadiness(t *testing.T) {
	testbed.Need(t, bed)
	cluster, cp := startProxied(t, "disc-ready")
	sideID := seed(t, cluster.Addr+"/side:1.36", "disc-ready-side")
	t.Cleanup(func() { _ = bed.Remove(context.Background(), sideID) })
	srv := fakeCluster(t)
	srv.RegisterJob(webJob(t, "web", cp.Addr+"/nowhere:1", cp.Addr+"/side:${NOMAD_META_bbver}"))

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	write := func(extra string) {
		cfg := daemonSettings() + fmt.Sprintf("nomad {\n  address = %q\n  infra_image = \"\"\n%s}\n", srv.URL, extra)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))
	waitFor(t, "the unpullable image failed and the sidecar present", 30*time.Second, func() bool {
		imgs := a.images(t)
		return imgs[cp.Addr+"/nowhere:1"].State == agent.StateFailed && imgs[cp.Addr+"/side:1.36"].State == agent.StatePresent
	})
	if code, body := a.get("/readyz"); code != http.StatusOK || !strings.Contains(body, "but 1 discovered image(s) that can't be fetched") {
		t.Errorf("/readyz: got %d %q, want 200 saying one discovered image can't be fetched", code, body)
	}

	write("  hold_readiness = true\n")
	waitFor(t, "/readyz 503 with hold_readiness", 30*time.Second, func() bool {
		code, body := a.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "nowhere:1")
	})
}
