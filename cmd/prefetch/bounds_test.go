package main

// What the agent and `once` must do whatever their peers do: a registry or a
// Docker daemon that accepts connections and never answers, an outage, a
// removal under a hung registry. Real dockerd and registries, with a fault
// proxy that holds requests unanswered; a Docker "daemon" that is a unix
// socket nobody answers on.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/registry"
	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// hungDocker listens on a unix socket, accepts every connection and never
// answers: a Docker daemon that hangs. It returns the DOCKER_HOST URL.
func hungDocker(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "unix://" + path
}

// shortDockerTimeout makes the Docker call timeout short for one test.
func shortDockerTimeout(t *testing.T) {
	old := dockerCallTimeout
	dockerCallTimeout = 2 * time.Second
	t.Cleanup(func() { dockerCallTimeout = old })
}

// runBounded runs the CLI, failing the test instead of hanging if it does
// not return within limit.
func runBounded(t *testing.T, limit time.Duration, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	type out struct {
		code           int
		stdout, stderr string
	}
	done := make(chan out, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		var o, e strings.Builder
		c := run(ctx, args, &o, &e)
		done <- out{c, o.String(), e.String()}
	}()
	select {
	case o := <-done:
		return o.code, o.stdout, o.stderr
	case <-time.After(limit):
		cancel()
		o := <-done
		t.Fatalf("prefetch %s did not end within %s\nstdout: %s\nstderr: %s", args[0], limit, o.stdout, o.stderr)
		return 0, "", ""
	}
}

func TestOnceHungDocker(t *testing.T) {
	shortDockerTimeout(t)
	host := hungDocker(t)
	cfg := writeFile(t, "c.hcl", fmt.Sprintf("docker {\n  host = %q\n}\nimage \"a\" { expected = \"127.0.0.1:1/a:1\" }\n", host))
	code, stdout, stderr := runBounded(t, 30*time.Second, "once", "-config", cfg)
	if code != exitFailed || stdout != "" || !strings.Contains(stderr, "the Docker daemon at "+host+" did not answer a ping within 2s") {
		t.Errorf("got exit %d, stdout %q, stderr:\n%s\nwant exit 1 naming the daemon's address", code, stdout, stderr)
	}
}

func TestRunHungDocker(t *testing.T) {
	shortDockerTimeout(t)
	host := hungDocker(t)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("docker {\n  host = %q\n}\nimage \"a\" { expected = \"127.0.0.1:1/a:1\" }\n", host)), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock")) // fails unless /healthz answers
	waitFor(t, "/readyz to say Docker is unreachable", 20*time.Second, func() bool {
		code, body := a.get("/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "Docker unreachable since") && strings.Contains(body, host)
	})
	if code, _ := a.get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with a hung Docker: got %d, want 200 (the agent's loop answers)", code)
	}
	code, stdout, _ := runCLI(t, "status", "-addr", a.addr)
	if code != exitFailed || !strings.Contains(stdout, "NOT READY: Docker unreachable since") {
		t.Errorf("prefetch status: exit %d\n%s\nwant 1, saying Docker is unreachable", code, stdout)
	}
	if n := a.metric(t, "prefetch_docker_up"); n != 0 {
		t.Errorf("prefetch_docker_up: got %v, want 0", n)
	}
}

// boundsSettings is daemonSettings with the shortest stall_timeout allowed.
func boundsSettings() string {
	return fmt.Sprintf("docker {\n  host = %q\n}\nretry_initial = \"200ms\"\nretry_max = \"1s\"\nresync_interval = \"1h\"\nstall_timeout = \"5s\"\n", bed.Host)
}

// TestOnceHungRegistry: a registry that accepts and never answers costs one
// image a bounded wait (a lookup, then a stalled pull); the next image on it
// skips it at once for its source.
func TestOnceHungRegistry(t *testing.T) {
	testbed.Need(t, bed)
	t.Parallel() // it mostly waits out real timeouts (stall_timeout, a hung registry's 15 s probe)
	ctx := context.Background()
	cluster, hung := startProxied(t, "once-hung")
	upstream, _ := startProxied(t, "once-hung-up")
	seed(t, cluster.Addr+"/present:1", "once-hung-present")
	seed(t, upstream.Addr+"/fresh:1", "once-hung-fresh")
	cfg := writeFile(t, "c.hcl", boundsSettings()+"concurrency = 1\n"+
		imageBlock("present", hung.Addr+"/present:1")+
		imageBlock("fresh", hung.Addr+"/fresh:1", upstream.Addr+"/fresh:1"))
	if code, stdout, stderr := runBounded(t, time.Minute, "once", "-config", cfg, "present"); code != exitOK {
		t.Fatalf("first pull of present: exit %d\n%s\n%s", code, stdout, stderr)
	}
	t.Cleanup(func() { _ = bed.Remove(ctx, hung.Addr+"/present:1", hung.Addr+"/fresh:1") })

	hung.Set(faultproxy.Hang, -1)
	start := time.Now()
	code, stdout, stderr := runBounded(t, 2*time.Minute, "once", "-config", cfg)
	if code != exitOK {
		t.Errorf("got exit %d, want 0 (present is present, fresh came from its source)\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{
		"present  " + hung.Addr + "/present:1  present, not refreshed",
		"fresh    " + hung.Addr + "/fresh:1    retagged from " + upstream.Addr + "/fresh:1",
		"expected: registry " + hung.Addr + " is not answering (a pull made no progress for 5s)",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	t.Logf("once with a hung registry took %s", time.Since(start).Round(time.Second))
}

// TestRunHungRegistry: two images of a registry that hangs never starve a
// third of another registry (concurrency = 2): it is fetched, restored after
// a removal, while they fail with a bounded error; /readyz says they are
// missing; when the registry heals they converge.
func TestRunHungRegistry(t *testing.T) {
	testbed.Need(t, bed)
	t.Parallel() // it mostly waits out real timeouts (stall_timeout, a hung registry's 15 s probe)
	ctx := context.Background()
	bad, hung := startProxied(t, "run-hung")
	good, goodProxy := startProxied(t, "run-hung-good")
	seed(t, bad.Addr+"/h1:1", "run-hung-h1")
	seed(t, bad.Addr+"/h2:1", "run-hung-h2")
	okID := seed(t, good.Addr+"/ok:1", "run-hung-ok")
	hung.Set(faultproxy.Hang, -1)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	cfg := boundsSettings() + "concurrency = 2\n" + imageBlock("h1", hung.Addr+"/h1:1") + imageBlock("h2", hung.Addr+"/h2:1") + imageBlock("ok", goodProxy.Addr+"/ok:1")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Remove(ctx, hung.Addr+"/h1:1", hung.Addr+"/h2:1", goodProxy.Addr+"/ok:1") })
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))

	waitFor(t, "ok present while its neighbours' registry hangs", 30*time.Second, wantState(t, a, "ok", agent.StatePresent))
	waitFor(t, "h1 failed with a bounded error", 30*time.Second, func() bool {
		img, _ := a.image(t, "h1")
		return img.State == agent.StateFailed && strings.Contains(img.LastError, "registry "+hung.Addr+" is not answering")
	})
	if err := bed.Remove(ctx, okID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ok restored while the hung registry's images fail", 30*time.Second, func() bool {
		im, err := bed.Client.ImageInspect(ctx, goodProxy.Addr+"/ok:1")
		return err == nil && im.ID == okID
	})
	if code, body := a.get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "h1 ") || !strings.Contains(body, "h2 ") {
		t.Errorf("/readyz: got %d %q, want 503 naming h1 and h2", code, body)
	}

	hung.Set(faultproxy.None, 0) // the registry heals
	waitFor(t, "h1 and h2 present once their registry answers", 90*time.Second, func() bool {
		code, _ := a.get("/readyz")
		return code == http.StatusOK
	})
}

// TestRunRemovalUnderHungRegistry: readiness follows a removal at once, even
// while the restore hangs; the restore, when it comes, is one INFO line with
// an honest result, for an image pulled from expected and for one retagged
// from a source, each deleted by ID as Nomad's image GC does.
func TestRunRemovalUnderHungRegistry(t *testing.T) {
	testbed.Need(t, bed)
	t.Parallel() // it mostly waits out real timeouts (stall_timeout, a hung registry's 15 s probe)
	ctx := context.Background()
	reg, p := startProxied(t, "run-removal")
	up, upProxy := startProxied(t, "run-removal-up")
	down := testbed.FreeAddr(t)
	gID := seed(t, reg.Addr+"/g:1", "run-removal-g")
	rID := seed(t, up.Addr+"/r:1", "run-removal-r")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	cfg := boundsSettings() + imageBlock("g", p.Addr+"/g:1") + imageBlock("r", down+"/r:1", upProxy.Addr+"/r:1")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Remove(ctx, gID, rID) })
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))
	waitFor(t, "ready", 30*time.Second, func() bool { code, _ := a.get("/readyz"); return code == http.StatusOK })
	pulled := a.metric(t, "prefetch_pulls_total", `result="pulled"`)
	retagged := a.metric(t, "prefetch_pulls_total", `result="retagged"`)
	upToDate := a.metric(t, "prefetch_pulls_total", `result="up to date"`)

	p.Set(faultproxy.Hang, -1)
	upProxy.Set(faultproxy.Hang, -1)
	if err := bed.Remove(ctx, gID, rID); err != nil { // by ID, as Nomad's GC
		t.Fatal(err)
	}
	// Not ready from the removal on: while the first restores are still in
	// flight (pulling, no failed attempt yet), not only once they failed.
	waitFor(t, "/readyz 503 naming both while their restores hang", 10*time.Second, func() bool {
		code, body := a.get("/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "g "+p.Addr+"/g:1 pulling") || !strings.Contains(body, "r "+down+"/r:1 pulling") {
			return false
		}
		g, _ := a.image(t, "g")
		r, _ := a.image(t, "r")
		return g.Attempts == 0 && r.Attempts == 0
	})
	p.Set(faultproxy.None, 0)
	upProxy.Set(faultproxy.None, 0)
	waitFor(t, "both restored", 90*time.Second, func() bool { code, _ := a.get("/readyz"); return code == http.StatusOK })

	logs := a.stderr.String()
	// The containerd store (Docker 29.7.2) deletes an ID's names one after
	// the other, an event each: the agent may hear the expected name go
	// while the source's is still there, and tag it again from it at once
	// ("up to date"), or after ("retagged"). The classic store removes
	// them in one step.
	racy := testbed.ContainerdStore()
	for name, result := range map[string]string{p.Addr + "/g:1": "pulled", down + "/r:1": "retagged"} {
		line := `"level":"INFO","msg":"image restored after Docker removed it","image":"` + name + `"`
		if n := strings.Count(logs, line); n != 1 {
			t.Errorf("%s: %d restore lines at INFO, want 1", name, n)
		}
		rest := logs[max(strings.Index(logs, line), 0):]
		ok := strings.Contains(rest, `"result":"`+result+`"`) || racy && result == "retagged" && strings.Contains(rest, `"result":"up to date"`)
		if !strings.Contains(logs, line+`,"name":`) || !ok {
			t.Errorf("%s: the restore line lacks result %q", name, result)
		}
	}
	if got := a.metric(t, "prefetch_pulls_total", `result="pulled"`); got != pulled+1 {
		t.Errorf("pulls counted as pulled: %v, want %v", got, pulled+1)
	}
	gotRetagged := a.metric(t, "prefetch_pulls_total", `result="retagged"`)
	gotUpToDate := a.metric(t, "prefetch_pulls_total", `result="up to date"`)
	if racy && gotRetagged+gotUpToDate == retagged+upToDate+1 {
		gotRetagged, gotUpToDate = retagged+1, upToDate
	}
	if gotRetagged != retagged+1 {
		t.Errorf("pulls counted as retagged: %v, want %v", gotRetagged, retagged+1)
	}
	if gotUpToDate != upToDate {
		t.Errorf("a restore was counted as up to date (%v, was %v)", gotUpToDate, upToDate)
	}
	if got := a.metric(t, "prefetch_docker_image_removals_total"); got != 2 {
		t.Errorf("removals: got %v, want 2", got)
	}
}

// TestRunReloadsAuthAndStall: an auth block and stall_timeout added by a
// render take effect without a restart.
func TestRunReloadsAuthAndStall(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	const user, password = "reload-bot", "reload-S3cret"
	reg, err := bed.StartRegistry("run-reload-auth", testbed.RegistryOptions{Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	private := reg.Addr + "/private/app:1"
	id, err := bed.Import(ctx, private, "run-reload-private", 4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bed.Push(ctx, private, registry.AuthConfig{Username: user, Password: password, ServerAddress: reg.Addr}); err != nil {
		t.Fatal(err)
	}
	if err := bed.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	stallReg, stallProxy := startProxied(t, "run-reload-stall")
	seed(t, stallReg.Addr+"/stall:1", "run-reload-stall")
	stallProxy.Set(faultproxy.BlobStall, -1)
	t.Setenv("DOCKER_CONFIG", t.TempDir()) // no credentials but the config's

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	pwFile := writeFile(t, "pw", password+"\n")
	r := newRenderer(t, cfgPath)
	long := strings.Replace(boundsSettings(), `stall_timeout = "5s"`, `stall_timeout = "1h"`, 1)
	r.render(t, long+imageBlock("app", private))
	t.Cleanup(func() { _ = bed.Remove(ctx, private) })
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))
	waitFor(t, "app refused without credentials", 30*time.Second, wantState(t, a, "app", agent.StateFailed))

	r.render(t, boundsSettings()+imageBlock("app", private)+
		fmt.Sprintf("auth %q {\n  username = %q\n  password_file = %q\n}\n", reg.Addr, user, pwFile)+
		imageBlock("stall", stallProxy.Addr+"/stall:1"))
	waitFor(t, "app present with the reloaded auth block", 30*time.Second, wantState(t, a, "app", agent.StatePresent))
	waitFor(t, "stall cancelled by the reloaded stall_timeout (5s, not 1h)", 30*time.Second, func() bool {
		img, _ := a.image(t, "stall")
		return img.State == agent.StateFailed && strings.Contains(img.LastError, "no progress for 5s")
	})
}

// TestRunSurvivesClosedStderr: the real binary, its stderr a pipe whose
// reader is gone (the log shipper died): the agent keeps running and
// serving, and stops cleanly on SIGTERM.
func TestRunSurvivesClosedStderr(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "prefetch")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("docker {\n  host = %q\n}\n", "unix://"+filepath.Join(dir, "no-docker.sock"))+imageBlock("a", "127.0.0.1:1/a:1")), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testbed.FreeAddr(t)
	cmd := exec.Command(bin, "run", "-config", cfgPath, "-listen", addr, "-lock-file", filepath.Join(dir, "lock"), "-log-level", "debug")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // nobody will ever read the agent's logs
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	a := &agentProc{addr: addr}
	waitFor(t, "the agent to serve with its stderr closed", 20*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("the agent died: %v", err)
		default:
		}
		code, _ := a.get("/readyz")
		return code == http.StatusServiceUnavailable
	})
	// More log lines (SIGHUP logs one), and it still answers.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reload after SIGHUP", 10*time.Second, func() bool {
		code, body := a.get("/metrics")
		return code == http.StatusOK && strings.Contains(body, `prefetch_config_reloads_total{result="ok"} 2`)
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("the agent did not stop within 20s of SIGTERM")
	}
}
