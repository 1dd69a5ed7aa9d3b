package main

// End-to-end tests of `prefetch run` against the real test bed: a private
// dockerd, real registries behind fault proxies, and the real consul-template
// rendering the watched config (temp file + rename, as in production).

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/status"
)

// agentProc is a `prefetch run` started in-process by startAgent.
type agentProc struct {
	addr   string
	stderr *testbed.Buffer
	stop   context.CancelFunc
	done   chan int
}

func startAgent(t *testing.T, cfgPath, lockPath string, extra ...string) *agentProc {
	t.Helper()
	return startAgentOn(t, testbed.FreeAddr(t), cfgPath, lockPath, extra...)
}

// startAgentOn is startAgent listening on addr (for a catalog that must
// list the agent before it starts).
func startAgentOn(t *testing.T, addr, cfgPath, lockPath string, extra ...string) *agentProc {
	t.Helper()
	a := &agentProc{addr: addr, stderr: &testbed.Buffer{}, done: make(chan int, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	args := append([]string{"run", "-config", cfgPath, "-listen", a.addr, "-lock-file", lockPath, "-log-level", "debug"}, extra...)
	go func() {
		var out bytes.Buffer
		a.done <- run(ctx, args, &out, a.stderr)
	}()
	t.Cleanup(func() {
		a.stop()
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			t.Error("the agent did not stop within 30s of its context being cancelled")
		}
		if t.Failed() {
			t.Logf("agent stderr:\n%s", a.stderr)
		}
	})
	waitFor(t, "the agent to serve /healthz", 20*time.Second, func() bool {
		code, _ := a.get("/healthz")
		return code == http.StatusOK
	})
	return a
}

// waitStopped stops the agent (as SIGTERM would) and returns its exit code.
func (a *agentProc) waitStopped(t *testing.T, limit time.Duration) int {
	t.Helper()
	a.stop()
	select {
	case code := <-a.done:
		a.done <- code // for the cleanup
		return code
	case <-time.After(limit):
		t.Fatalf("the agent did not stop within %s of SIGTERM", limit)
		return -1
	}
}

func (a *agentProc) get(path string) (int, string) {
	resp, err := http.Get("http://" + a.addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func (a *agentProc) status(t *testing.T) agent.Snapshot {
	t.Helper()
	s, err := status.Fetch(context.Background(), a.addr, "")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (a *agentProc) image(t *testing.T, name string) (agent.ImageStatus, bool) {
	t.Helper()
	for _, img := range a.status(t).Images {
		if img.Name == name {
			return img, true
		}
	}
	return agent.ImageStatus{}, false
}

// metric returns the sum of every sample of the metric family name whose
// labels contain each of labels (`result="failed"`).
func (a *agentProc) metric(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	code, body := a.get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// waitFor polls cond every 50 ms until it holds, failing the test after limit.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// consulTemplate is the real consul-template binary (see
// testbed.ConsulTemplate).
func consulTemplate(t *testing.T) string { return testbed.ConsulTemplate(t) }

// renderer renders dest with the real consul-template from a template that
// includes a data file, the way a Nomad template block or a consul-template
// service keeps the agent's config current.
type renderer struct {
	bin, tpl, data, dest string
}

func newRenderer(t *testing.T, dest string) *renderer {
	t.Helper()
	dir := t.TempDir()
	r := &renderer{bin: consulTemplate(t), tpl: filepath.Join(dir, "config.hcl.tpl"), data: filepath.Join(dir, "kv.hcl"), dest: dest}
	if err := os.WriteFile(r.tpl, []byte("# rendered by consul-template\n{{ file \""+r.data+"\" }}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *renderer) render(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(r.data, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(r.bin, "-once", "-log-level", "warn", "-template", r.tpl+":"+r.dest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("consul-template: %v\n%s", err, out)
	}
}

func imageBlock(name, expected string, sources ...string) string {
	var q []string
	for _, s := range sources {
		q = append(q, strconv.Quote(s))
	}
	return fmt.Sprintf("image %q {\n  expected = %q\n  sources  = [%s]\n}\n", name, expected, strings.Join(q, ", "))
}

func daemonSettings() string { return daemonSettingsFor(bed.Host) }

// daemonSettingsFor is daemonSettings for the dockerd at host (a peers
// test's other nodes).
func daemonSettingsFor(host string) string {
	return fmt.Sprintf("docker {\n  host = %q\n}\nretry_initial = \"200ms\"\nretry_max = \"1s\"\nresync_interval = \"1h\"\nstall_timeout = \"5s\"\n", host)
}

// startProxied starts a registry behind a fault proxy.
func startProxied(t *testing.T, name string) (*testbed.Registry, *faultproxy.Proxy) {
	t.Helper()
	return bed.ProxiedRegistry(t, name)
}

func seed(t *testing.T, ref, content string) string {
	t.Helper()
	_, id, err := bed.Seed(context.Background(), ref, content, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func wantState(t *testing.T, a *agentProc, name, state string) func() bool {
	return func() bool {
		img, ok := a.image(t, name)
		return ok && img.State == state
	}
}

// TestRun follows an agent through a day in its life: bootstrap from a
// source, an image that appears later, config changes rendered by
// consul-template (a new image, a removed one, a broken file, a fix), Nomad's
// GC removing an image, a second agent refused, and a clean stop.
func TestRun(t *testing.T) {
	testbed.Need(t, bed)
	cluster, _ := startProxied(t, "run-cluster")
	upstream, upProxy := startProxied(t, "run-upstream")
	_ = cluster
	exp := func(repo string) string { return cluster.Addr + "/" + repo }
	src := func(repo string) string { return upProxy.Addr + "/" + repo }
	idA := seed(t, upstream.Addr+"/a:1", "run-a")
	seed(t, upstream.Addr+"/c:1", "run-c")

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	lockPath := filepath.Join(dir, "prefetch.lock")
	r := newRenderer(t, cfgPath)
	base := daemonSettings() + imageBlock("a", exp("a:1"), src("a:1")) + imageBlock("b", exp("b:1"), src("b:1"))
	r.render(t, base)

	a := startAgent(t, cfgPath, lockPath)

	// a comes from the source; b exists nowhere yet: not ready.
	waitFor(t, "a present", 30*time.Second, wantState(t, a, "a", agent.StatePresent))
	if img, _ := a.image(t, "a"); img.ImageID != idA || img.Source != src("a:1") {
		t.Errorf("a: got image %s from %q, want %s from %s", img.ImageID, img.Source, idA, src("a:1"))
	}
	waitFor(t, "b failed", 30*time.Second, wantState(t, a, "b", agent.StateFailed))
	if code, body := a.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "b "+exp("b:1")) {
		t.Errorf("/readyz with b missing: got %d %q, want 503 naming b", code, body)
	}
	if code, _, _ := runCLI(t, "status", "-addr", a.addr); code != exitFailed {
		t.Errorf("prefetch status with b missing: got exit %d, want %d", code, exitFailed)
	}

	// b is published upstream: the retry picks it up, /readyz flips to 200.
	seed(t, upstream.Addr+"/b:1", "run-b")
	waitFor(t, "/readyz 200 once b is published", 30*time.Second, func() bool {
		code, _ := a.get("/readyz")
		return code == http.StatusOK
	})
	code, stdout, _ := runCLI(t, "status", "-addr", a.addr)
	if code != exitOK || !regexp.MustCompile(`(?m)^a +present +`+regexp.QuoteMeta(exp("a:1"))+` +`+regexp.QuoteMeta(src("a:1"))).MatchString(stdout) {
		t.Errorf("prefetch status: exit %d\n%s", code, stdout)
	}

	// consul-template renders a config naming a new image: pulled, no restart.
	r.render(t, base+imageBlock("c", exp("c:1"), src("c:1")))
	waitFor(t, "c present", 30*time.Second, wantState(t, a, "c", agent.StatePresent))

	// ...and one without it: c is no longer tried.
	r.render(t, base)
	waitFor(t, "c gone from the status", 30*time.Second, func() bool { _, ok := a.image(t, "c"); return !ok })

	// A broken render: the error names file:line, the last good set stays.
	failedBefore := a.metric(t, "prefetch_config_reloads_total", `result="failed"`)
	r.render(t, base+"image \"d\" {\n  expected = \n}\n")
	waitFor(t, "the broken config reported", 30*time.Second, func() bool { return a.status(t).ConfigError != "" })
	s := a.status(t)
	if !strings.Contains(s.ConfigError, cfgPath+":") || len(s.Images) != 2 {
		t.Errorf("broken config: got error %q and %d images, want file:line and the last good 2", s.ConfigError, len(s.Images))
	}
	if code, _ := a.get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with a broken config on disk: got %d, want 200 (the last good config is served)", code)
	}
	if got := a.metric(t, "prefetch_config_reloads_total", `result="failed"`); got != failedBefore+1 {
		t.Errorf("failed reloads: got %v, want %v", got, failedBefore+1)
	}
	if !strings.Contains(a.stderr.String(), `"msg":"config not loaded; keeping the last good config"`) {
		t.Errorf("stderr lacks the config error")
	}

	// A fixed render converges.
	r.render(t, base+imageBlock("c", exp("c:1"), src("c:1")))
	waitFor(t, "c present after the fix", 30*time.Second, wantState(t, a, "c", agent.StatePresent))
	if s := a.status(t); s.ConfigError != "" {
		t.Errorf("after the fix: config error %q, want none", s.ConfigError)
	}

	// Nomad's image GC removes a by ID, taking our tag: back through the event
	// subscription (resync is an hour away).
	removals := a.metric(t, "prefetch_docker_image_removals_total")
	if err := bed.Remove(context.Background(), exp("a:1"), src("a:1")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a restored after docker rmi", 30*time.Second, func() bool {
		im, err := bed.Client.ImageInspect(context.Background(), exp("a:1"))
		return err == nil && im.ID == idA
	})
	if got := a.metric(t, "prefetch_docker_image_removals_total"); got <= removals {
		t.Errorf("removals metric: got %v, want more than %v", got, removals)
	}

	// The metrics, as documented.
	for _, name := range []string{
		`prefetch_images{state="present"} 3`,
		`prefetch_pulls_total{from="source",result="retagged"}`,
		`prefetch_pull_duration_seconds_bucket{result="retagged"`,
		`prefetch_config_reloads_total{result="ok"}`,
		`prefetch_config_last_success_timestamp_seconds `,
		`prefetch_docker_image_removals_total `,
	} {
		if _, body := a.get("/metrics"); !strings.Contains(body, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}

	// SIGHUP: the config is reloaded and every image checked now.
	reloads := a.reloads(t)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reload after SIGHUP", 10*time.Second, func() bool { return a.reloads(t) > reloads })
	if !strings.Contains(a.stderr.String(), `"msg":"SIGHUP: reloading the config and checking every image"`) {
		t.Error("stderr lacks the SIGHUP line")
	}

	// A second agent on the node is refused, naming the holder.
	code, _, stderr := runCLI(t, "run", "-config", cfgPath, "-lock-file", lockPath, "-listen", "")
	if code != exitUsage || !strings.Contains(stderr, fmt.Sprintf("(PID %d) holds the lock %s", os.Getpid(), lockPath)) {
		t.Errorf("second agent: got exit %d, stderr %q; want %d naming PID %d", code, stderr, exitUsage, os.Getpid())
	}

	// SIGTERM (the context): a clean stop, exit 0.
	if code := a.waitStopped(t, 30*time.Second); code != exitOK {
		t.Errorf("stopped agent: exit %d, want 0", code)
	}
}

// reloads returns the total config reloads the agent has counted.
func (a *agentProc) reloads(t *testing.T) float64 {
	return a.metric(t, "prefetch_config_reloads_total")
}

// TestRunReloadsOncePerBurst: each way a file gets replaced is one reload,
// and so is a burst of 50 renders within a second.
func TestRunReloadsOncePerBurst(t *testing.T) {
	testbed.Need(t, bed)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	n := 0
	content := func() []byte {
		n++
		return []byte(daemonSettings() + fmt.Sprintf("allow_empty = true # render %d\n", n))
	}
	if err := os.WriteFile(cfgPath, content(), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))
	// atomicWrite writes as consul-template does: a temp file, then rename.
	atomicWrite := func(data []byte) {
		tmp, err := os.CreateTemp(dir, ".config.hcl.*")
		if err != nil {
			t.Fatal(err)
		}
		tmp.Write(data)
		tmp.Chmod(0o644)
		tmp.Close()
		if err := os.Rename(tmp.Name(), cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	r := newRenderer(t, cfgPath)
	// marker writes a config naming the image marker-k, which the status
	// shows once that config is loaded: a reload that comes after every
	// reload of the change before it (or together with the last), so that
	// counting up to it counts the change's reloads without waiting out a
	// stretch of wall time.
	markers := 0
	marker := func() string {
		markers++
		name := fmt.Sprintf("marker-%d", markers)
		atomicWrite([]byte(daemonSettings() + fmt.Sprintf("image %q {\n  expected = \"127.0.0.1:1/marker:%d\"\n}\n", name, markers)))
		return name
	}
	// The watcher's rule (one reload per burst, Quiet after its last event
	// and at most Max after its first) is tested exactly, on a fake clock,
	// in package watch. Here, on a real clock and a machine that may be busy
	// with other tests, a stall longer than the quiet window can rightly
	// split a change in two, so this test asserts what holds regardless: a
	// change is reloaded, and a burst of 50 writes is coalesced into a few
	// reloads, not one per write.
	for _, tc := range []struct {
		name   string
		most   float64 // reloads allowed: one, plus what stalls can split off
		change func()
	}{
		{"consul-template render", 2, func() { r.render(t, string(content())) }},
		{"write in place", 2, func() {
			f, err := os.OpenFile(cfgPath, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(content())
			f.Close()
		}},
		{"delete then create", 2, func() {
			os.Remove(cfgPath)
			time.Sleep(20 * time.Millisecond)
			os.WriteFile(cfgPath, content(), 0o644)
		}},
		{"burst of 50 renders in a second", 5, func() {
			for range 50 {
				atomicWrite(content())
				time.Sleep(20 * time.Millisecond)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := a.reloads(t)
			tc.change()
			waitFor(t, "a reload", 10*time.Second, func() bool { return a.reloads(t) > before })
			name := marker()
			waitFor(t, "the marker's config loaded", 10*time.Second, func() bool {
				_, loaded := a.image(t, name)
				return loaded && a.reloads(t)-before >= 2 // the change's first reload and the marker's
			})
			if got := a.reloads(t) - before - 1; got > tc.most { // less the marker's
				t.Errorf("got %v reloads, want 1 to %v", got, tc.most)
			}
			if s := a.status(t); s.ConfigError != "" {
				t.Errorf("config error %q, want none", s.ConfigError)
			}
		})
	}

	// The file removed: a warning, the last good config kept; back: reloaded.
	before := a.metric(t, "prefetch_config_reloads_total", `result="failed"`)
	os.Remove(cfgPath)
	waitFor(t, "the missing file reported", 10*time.Second, func() bool {
		return strings.Contains(a.status(t).ConfigError, "missing; keeping the last good config")
	})
	if got := a.metric(t, "prefetch_config_reloads_total", `result="failed"`); got != before+1 {
		t.Errorf("failed reloads: got %v, want %v", got, before+1)
	}
	atomicWrite(content())
	waitFor(t, "recovery once the file is back", 10*time.Second, func() bool { return a.status(t).ConfigError == "" })
}

func TestRunConfigMissingAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.hcl")
	code, _, stderr := runCLI(t, "run", "-config", path, "-listen", "", "-lock-file", filepath.Join(t.TempDir(), "lock"))
	if code != exitUsage || !strings.Contains(stderr, "reading config: open "+path) {
		t.Errorf("got exit %d, stderr %q; want %d naming the file", code, stderr, exitUsage)
	}
}

// TestRunRetries: a registry that is down and then comes up converges within
// one backoff step; a 429's Retry-After delays the next attempt at least that
// long.
func TestRunRetries(t *testing.T) {
	testbed.Need(t, bed)
	down := testbed.FreeAddr(t)
	_, limited := startProxied(t, "run-limited")
	limited.Set(faultproxy.Manifest429, -1)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	cfg := daemonSettings() + imageBlock("late", down+"/late:1") + imageBlock("limited", limited.Addr+"/limited:1")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))

	waitFor(t, "limited failed", 20*time.Second, wantState(t, a, "limited", agent.StateFailed))
	img, _ := a.image(t, "limited")
	if img.NextRetry == nil || img.FailingSince == nil {
		t.Fatalf("limited: got %+v, want a next retry", img)
	}
	// The first failure's wait is next_retry - failing_since: retry_initial is
	// 200ms, the registry asked for faultproxy.RetryAfter seconds.
	if wait := img.NextRetry.Sub(*img.FailingSince); wait < 7*time.Second {
		t.Errorf("after a 429 with Retry-After: 7, the next attempt is %s later, want at least 7s", wait)
	}
	if !strings.Contains(img.LastError, "retry after 7s") {
		t.Errorf("last error %q, want it to say retry after 7s", img.LastError)
	}

	waitFor(t, "late failed, twice", 20*time.Second, func() bool {
		img, _ := a.image(t, "late")
		return img.State == agent.StateFailed && img.Attempts >= 2
	})
	reg, err := bed.StartRegistry("run-late", testbed.RegistryOptions{Addr: down})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	seed(t, down+"/late:1", "run-late")
	// The backoff is capped at retry_max (1s): converged within one step,
	// give or take the pull.
	waitFor(t, "late present once its registry is up", 10*time.Second, wantState(t, a, "late", agent.StatePresent))
}

// TestRunStopsMidPull: SIGTERM while a pull hangs on a stalled blob stops the
// agent promptly and cleanly.
func TestRunStopsMidPull(t *testing.T) {
	testbed.Need(t, bed)
	reg, p := startProxied(t, "run-stall")
	seed(t, reg.Addr+"/stall:1", "run-stall")
	p.Set(faultproxy.BlobStall, -1)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	cfg := strings.Replace(daemonSettings(), `stall_timeout = "5s"`, `stall_timeout = "10m"`, 1) + imageBlock("stall", p.Addr+"/stall:1")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))
	waitFor(t, "the pull to be stuck on the blob", 20*time.Second, func() bool {
		img, _ := a.image(t, "stall")
		return img.State == agent.StatePulling && p.Count("GET blob") > 0
	})
	if code := a.waitStopped(t, 20*time.Second); code != exitOK {
		t.Errorf("stopped mid-pull: exit %d, want 0", code)
	}
}

// TestRunSurvivesDockerRestart must stay the last test of the package: it
// restarts the shared dockerd.
func TestRunSurvivesDockerRestart(t *testing.T) {
	testbed.Need(t, bed)
	reg, p := startProxied(t, "run-restart")
	idA := seed(t, reg.Addr+"/ra:1", "run-ra")
	seed(t, reg.Addr+"/rb:1", "run-rb")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	base := daemonSettings() + imageBlock("ra", p.Addr+"/ra:1")
	if err := os.WriteFile(cfgPath, []byte(base), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"), "-log-level", "debug")
	waitFor(t, "ra present", 20*time.Second, wantState(t, a, "ra", agent.StatePresent))

	if err := bed.StopDocker(); err != nil {
		t.Fatal(err)
	}
	// The outage shows at once (the event subscription is lost), not at
	// the next resync an hour away.
	waitFor(t, "/readyz to say Docker is unreachable", 10*time.Second, func() bool {
		code, body := a.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "not ready: Docker unreachable since")
	})
	if code, stdout, _ := runCLI(t, "status", "-addr", a.addr); code != exitFailed || !strings.Contains(stdout, "NOT READY: Docker unreachable") {
		t.Errorf("prefetch status with dockerd down: exit %d\n%s", code, stdout)
	}
	// While dockerd is down, the config gains an image: it fails, quietly.
	if err := os.WriteFile(cfgPath, []byte(base+imageBlock("rb", p.Addr+"/rb:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rb failing while dockerd is down", 20*time.Second, wantState(t, a, "rb", agent.StateFailed))
	if err := bed.RestartDocker(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rb present after dockerd is back", 30*time.Second, wantState(t, a, "rb", agent.StatePresent))
	if n := strings.Count(a.stderr.String(), `"msg":"the Docker daemon is unreachable; retrying with backoff"`); n != 1 {
		t.Errorf("the outage was logged %d times at ERROR, want once", n)
	}

	// The event subscription came back too: a removal is restored at once.
	if err := bed.Remove(context.Background(), p.Addr+"/ra:1"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ra restored after docker rmi", 30*time.Second, func() bool {
		im, err := bed.Client.ImageInspect(context.Background(), p.Addr+"/ra:1")
		return err == nil && im.ID == idA
	})
}

// TestRunStartsWithDockerDown must come after every other test that needs
// dockerd running: an agent started while the daemon is down stays up, says
// so once, and converges when the daemon comes.
func TestRunStartsWithDockerDown(t *testing.T) {
	testbed.Need(t, bed)
	reg, p := startProxied(t, "run-nodocker")
	seed(t, reg.Addr+"/nd:1", "run-nd")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(daemonSettings()+imageBlock("nd", p.Addr+"/nd:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := bed.StopDocker(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := bed.Client.Ping(context.Background(), client.PingOptions{}); err != nil {
			if err := bed.RestartDocker(); err != nil {
				t.Errorf("restarting dockerd: %v", err)
			}
		}
	})
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))
	waitFor(t, "nd failing with dockerd down", 20*time.Second, wantState(t, a, "nd", agent.StateFailed))
	if code, _ := a.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with dockerd down: got %d, want 200 (the agent is alive)", code)
	}
	if err := bed.RestartDocker(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "nd present once dockerd is up", 30*time.Second, wantState(t, a, "nd", agent.StatePresent))
	if n := strings.Count(a.stderr.String(), `"msg":"the Docker daemon is unreachable; retrying with backoff"`); n != 1 {
		t.Errorf("the outage was logged %d times at ERROR, want once", n)
	}
}
