package agent

// Tests of the Loop against the fake daemon: what the hardening of the loop
// must hold whatever Docker and the registries do. Each runs in a
// testing/synctest bubble: timers run on the bubble's clock and eventually
// waits for every goroutine to block, so nothing depends on the machine's
// speed.

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// A registry whose pulls hang must not take every fetch slot while images
// of another registry wait.
func TestDaemonHungRegistryDoesNotStarveOthers(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(map[string]registry.Image{"good:5000/ok:1": {ID: "sha256:ok"}}, "bad:5000/a:1", "bad:5000/b:1")
		d, _ := daemonUnderTest(t, h, daemonBase+`concurrency = 2
	image "a" { expected = "bad:5000/a:1" }
	image "b" { expected = "bad:5000/b:1" }
	image "ok" { expected = "good:5000/ok:1" }
	`)
		eventually(t, "ok present while bad's pulls hang", func() bool { s, _ := imageState(d, "ok"); return s.State == StatePresent })
	})
}

// An entry removed while its fetch is in flight and added again must not
// take its cancelled predecessor's result.
func TestDaemonReaddedEntryIgnoresOldResult(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(nil, "reg:5000/x:1")
		h.slow["reg:5000/x:1"] = true
		with := daemonBase + `image "x" { expected = "reg:5000/x:1" }` + "\n"
		without := daemonBase + `image "y" { expected = "reg:5000/y:1" }` + "\n"
		d, rewrite := daemonUnderTest(t, h, with)
		eventually(t, "x's pull to hang", func() bool { return h.count(h.started, "reg:5000/x:1") == 1 })
		rewrite(without) // cancels x's pull, which is slow to return
		eventually(t, "x's pull cancelled", func() bool { return h.count(h.cancelled, "reg:5000/x:1") == 1 })
		rewrite(with) // x again, while the old pull has not returned
		eventually(t, "the new x in the status", func() bool { _, ok := imageState(d, "x"); return ok })
		h.mu.Lock()
		gate := h.gates["reg:5000/x:1"]
		h.slow["reg:5000/x:1"] = false
		h.mu.Unlock()
		h.setHang("reg:5000/x:1", true) // the new fetch hangs on a new gate
		close(gate)                     // the old one returns now: cancelled
		eventually(t, "x's second pull", func() bool { return h.count(h.started, "reg:5000/x:1") >= 2 })
		eventually(t, "the cancelled pull to return", func() bool { return h.count(h.inFlight, "reg:5000/x:1") == 1 })
		// Its result reaches the loop at once; watch the state for a while.
		for range 40 {
			s, _ := imageState(d, "x")
			if s.State == StateFailed || s.Attempts > 0 {
				t.Fatalf("x took the cancelled fetch's result: %+v", s)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// A Docker removal that arrives while the image's fetch runs is not lost:
// the fetch's result is dropped and the image checked again.
func TestDaemonRemovalDuringFetch(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		img := registry.Image{ID: "sha256:e"}
		h := newHangingDocker(map[string]registry.Image{"reg:5000/e:1": img})
		logs := &testbed.Buffer{}
		d, rewrite := daemonWith(t, h, daemonBase+`image "e" { expected = "reg:5000/e:1" }`+"\n", logTo(logs))
		eventually(t, "e present", func() bool { s, _ := imageState(d, "e"); return s.State == StatePresent })

		// A changed entry (a platform added) is fetched again: make that hang.
		h.setHang("reg:5000/e:1", true)
		rewrite(daemonBase + `image "e" {
	  expected = "reg:5000/e:1"
	  platform = "linux/amd64"
	}
	`)
		eventually(t, "the second fetch in flight", func() bool { return h.count(h.started, "reg:5000/e:1") == 2 })
		h.fakeDocker.mu.Lock()
		delete(h.fakeDocker.local, "reg:5000/e:1")
		h.fakeDocker.mu.Unlock()
		h.events <- registry.ImageEvent{Action: "delete", ID: "sha256:e"}
		eventually(t, "the loop to see the event", func() bool { return strings.Contains(logs.String(), "Docker event about an image the node keeps") })
		h.release("reg:5000/e:1")
		eventually(t, "a third fetch after the removal", func() bool { return h.count(h.started, "reg:5000/e:1") == 3 })
		eventually(t, "e present", func() bool { s, _ := imageState(d, "e"); return s.State == StatePresent })
	})
}

// Readiness follows the node: from the removal event, not from the end of
// the restore.
func TestDaemonReadinessFollowsRemoval(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		img := registry.Image{ID: "sha256:r"}
		h := newHangingDocker(map[string]registry.Image{"reg:5000/r:1": img})
		logs := &testbed.Buffer{}
		d, _ := daemonWith(t, h, daemonBase+`image "r" { expected = "reg:5000/r:1" }`+"\n", logTo(logs))
		eventually(t, "r present", func() bool { s, _ := imageState(d, "r"); return s.State == StatePresent })
		eventually(t, "ready", func() bool { ok, _ := d.Snapshot().Ready(); return ok })
		h.setHang("reg:5000/r:1", true) // the restore will hang
		h.fakeDocker.mu.Lock()
		delete(h.fakeDocker.local, "reg:5000/r:1")
		h.fakeDocker.mu.Unlock()
		h.events <- registry.ImageEvent{Action: "untag", ID: "sha256:r", Name: "sha256:r"}
		eventually(t, "not ready while the restore runs", func() bool {
			ok, why := d.Snapshot().Ready()
			return !ok && strings.Contains(why, "1 image(s) missing")
		})
		// An untag of another name of the same image (the source tag) leaves it.
		h.release("reg:5000/r:1")
		eventually(t, "ready again", func() bool { ok, _ := d.Snapshot().Ready(); return ok })
		pulls := h.count(h.started, "reg:5000/r:1")
		h.events <- registry.ImageEvent{Action: "untag", ID: "sha256:r", Name: "sha256:r"}
		eventually(t, "the check after the second untag", func() bool {
			return strings.Contains(logs.String(), "a Docker event left expected in place")
		})
		if ok, why := d.Snapshot().Ready(); !ok {
			t.Fatalf("an untag that left expected in place made it not ready: %s", why)
		}
		if n := h.count(h.started, "reg:5000/r:1"); n != pulls {
			t.Errorf("an untag that left expected in place pulled again (%d pulls, was %d)", n, pulls)
		}
	})
}

// A lost event subscription with the daemon gone shows at once, not at the
// next resync.
func TestDaemonDockerOutageIsReportedAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(map[string]registry.Image{"reg:5000/o:1": {ID: "sha256:o"}})
		logs := &testbed.Buffer{}
		d, _ := daemonWith(t, h, daemonBase+`image "o" { expected = "reg:5000/o:1" }`+"\n", logTo(logs))
		eventually(t, "o present", func() bool { s, _ := imageState(d, "o"); return s.State == StatePresent })
		eventually(t, "ready", func() bool { ok, _ := d.Snapshot().Ready(); return ok })
		h.setDown(true)
		h.breakEvents()
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("logs:\n%s", logs)
			}
		})
		eventually(t, "not ready, Docker unreachable", func() bool {
			ok, why := d.Snapshot().Ready()
			return !ok && strings.Contains(why, "Docker unreachable since") && strings.Contains(why, "Cannot connect")
		})
		if n := strings.Count(logs.String(), `"msg":"the Docker daemon is unreachable; retrying with backoff"`); n != 1 {
			t.Errorf("the outage was logged %d times at ERROR, want once:\n%s", n, logs)
		}
		h.setDown(false)
		eventually(t, "ready once Docker is back", func() bool { ok, _ := d.Snapshot().Ready(); return ok })
		if !strings.Contains(logs.String(), `"msg":"the Docker daemon is reachable again"`) {
			t.Errorf("the recovery was not logged:\n%s", logs)
		}
	})
}

type authRecorder struct {
	mu    sync.Mutex
	hosts [][]string
}

func (a *authRecorder) SetAuths(auths []registry.Auth) {
	var hosts []string
	for _, x := range auths {
		hosts = append(hosts, x.Host)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.hosts = append(a.hosts, hosts)
}

func (a *authRecorder) last() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.hosts) == 0 {
		return nil
	}
	return a.hosts[len(a.hosts)-1]
}

// Auth blocks take effect on reload.
func TestDaemonReloadsAuths(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		pw := filepath.Join(t.TempDir(), "pw")
		if err := os.WriteFile(pw, []byte("secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		h := newHangingDocker(nil)
		rec := &authRecorder{}
		_, rewrite := daemonWith(t, h, daemonBase+`image "p" { expected = "reg:5000/p:1" }`+"\n", func(d *Loop) { d.Auths = rec })
		eventually(t, "the first config's (no) auths", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return len(rec.hosts) == 1 && rec.hosts[0] == nil
		})
		rewrite(daemonBase + `image "p" { expected = "reg:5000/p:1" }
	auth "reg:5000" {
	  username      = "bot"
	  password_file = "` + pw + `"
	}
	`)
		eventually(t, "the reloaded auth block", func() bool { return slices.Equal(rec.last(), []string{"reg:5000"}) })
	})
}

// The stall_timeout in force is the reloaded config's (what the agent's
// served peer transfers read at each one).
func TestDaemonReloadsStallTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(nil)
		d, rewrite := daemonWith(t, h, daemonBase+"stall_timeout = \"30s\"\n"+`image "p" { expected = "reg:5000/p:1" }`+"\n", nil)
		eventually(t, "the first config's stall_timeout", func() bool { return d.StallTimeout() == 30*time.Second })
		rewrite(daemonBase + "stall_timeout = \"5m\"\n" + `image "p" { expected = "reg:5000/p:1" }` + "\n")
		eventually(t, "the reloaded stall_timeout", func() bool { return d.StallTimeout() == 5*time.Minute })
	})
}

// A config changed after the caller read it and before the loop ran is
// applied: the loop compares with what the caller parsed, not with a read of
// its own.
func TestDaemonChangeBeforeRunIsApplied(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(map[string]registry.Image{"reg:5000/new:1": {ID: "sha256:n"}})
		path := filepath.Join(t.TempDir(), "config.hcl")
		first := daemonBase + `image "old" { expected = "reg:5000/old:1" }` + "\n"
		if err := os.WriteFile(path, []byte(first), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		// The render lands after the read, before the loop starts; the watcher
		// (started before the read) has reported it.
		if err := os.WriteFile(path, []byte(daemonBase+`image "new" { expected = "reg:5000/new:1" }`+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		changed := make(chan struct{}, 1)
		changed <- struct{}{}
		d := &Loop{Docker: h, Events: h, Log: slog.New(slog.DiscardHandler)}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx, path, []byte(first), cfg, changed, nil) }()
		t.Cleanup(func() { cancel(); <-done })
		eventually(t, "the second render in force", func() bool { s, ok := imageState(d, "new"); return ok && s.State == StatePresent })
	})
}

// Two images sharing a source for different platforms never pull it at the
// same time: the inspect after one pull must see what that pull brought.
func TestFetchesOfOneReferenceTakeTurns(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		const src = "docker.io/library/shared:1"
		h := newHangingDocker(map[string]registry.Image{src: {ID: "sha256:s"}}, src)
		f := &Fetcher{Docker: h, Log: slog.New(slog.DiscardHandler)}
		images := []config.Image{
			{Name: "amd", Expected: "cluster:5000/amd:1", Sources: []string{src}, Platform: "linux/amd64"},
			{Name: "arm", Expected: "cluster:5000/arm:1", Sources: []string{src}, Platform: "linux/arm64"},
		}
		done := make(chan []Result, 1)
		go func() { done <- f.Once(context.Background(), images, 2) }()
		eventually(t, "the first pull of the source", func() bool { return h.count(h.started, src) == 1 })
		eventually(t, "both expected pulls tried", func() bool {
			return h.count(h.started, "cluster:5000/amd:1")+h.count(h.started, "cluster:5000/arm:1") == 2
		})
		h.release(src)
		for _, r := range <-done {
			if r.Outcome != Retagged {
				t.Errorf("%s: got %q (%v), want retagged", r.Image.Name, r.Outcome, r.Err)
			}
		}
		if n := h.count(h.maxFlight, src); n != 1 {
			t.Errorf("the shared source was pulled %d at a time, want one", n)
		}
	})
}

// logTo makes the loop log to logs, in JSON, from DEBUG up.
func logTo(logs *testbed.Buffer) func(*Loop) {
	return func(d *Loop) {
		d.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// storeDocker is a fakeDocker on a given image store: on the containerd
// store an image tagged into a repository inspects there by its digest.
type storeDocker struct {
	*fakeDocker
	containerd bool
}

func (s storeDocker) ContainerdStore(context.Context) bool { return s.containerd }

func (s storeDocker) Inspect(ctx context.Context, ref string) (registry.Image, error) {
	repo, dgst, byDigest := strings.Cut(ref, "@")
	if byDigest && s.containerd {
		s.mu.Lock()
		for k, im := range s.local {
			if strings.HasPrefix(k, repo+":") && im.HasDigest(dgst) {
				s.mu.Unlock()
				return im, nil
			}
		}
		s.mu.Unlock()
	}
	return s.fakeDocker.Inspect(ctx, ref)
}

// An image named by a digest is served from a source only where the image
// store lets a tag in its repository name it by digest (containerd); on the
// classic store the source is not tried, and the error says why.
func TestDigestNamedImageFromSource(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		expected := "cluster:5000/app@" + dgst
		img := config.Image{Expected: expected, Digest: dgst, Sources: []string{src1}}
		remote := map[string]registry.Image{"docker.io/library/app@" + dgst: {ID: "sha256:new", RepoDigests: []string{"docker.io/library/app@" + dgst}}}
		for _, containerd := range []bool{true, false} {
			d := storeDocker{fakeDocker: &fakeDocker{local: map[string]registry.Image{}, remote: remote}, containerd: containerd}
			f := &Fetcher{Docker: d, Log: slog.New(slog.DiscardHandler)}
			got := f.Fetch(context.Background(), img)
			if containerd {
				wantTag := "tag sha256:new cluster:5000/app:prefetch-" + strings.TrimPrefix(dgst, "sha256:")[:12]
				if got.Outcome != Retagged || !slices.Contains(d.pulls(), wantTag) {
					t.Errorf("containerd store: got %q (%v), calls %q; want retagged with %q", got.Outcome, got.Err, d.pulls(), wantTag)
				}
				continue
			}
			if got.Outcome != Failed || !strings.Contains(got.Err.Error(), "only on Docker's containerd image store") {
				t.Errorf("classic store: got %q (%v), want failed saying why the source was not tried", got.Outcome, got.Err)
			}
			if calls := d.pulls(); len(calls) != 1 {
				t.Errorf("classic store: calls %q, want only the pull of expected", calls)
			}
		}
	})
}
