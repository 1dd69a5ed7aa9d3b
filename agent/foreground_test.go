package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// fakeForeground is a ForegroundWatcher the test speaks for.
type fakeForeground struct {
	mu    sync.Mutex
	found func(Foreground)
	runs  int
}

func (f *fakeForeground) Run(ctx context.Context, _ config.Nomad, found func(Foreground)) {
	f.mu.Lock()
	f.found, f.runs = found, f.runs+1
	f.mu.Unlock()
	<-ctx.Done()
}

func (f *fakeForeground) report(fg Foreground) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.found(fg)
}

// yieldBed runs a Loop over h with the config src and the fake watcher,
// inside the caller's synctest bubble; stop ends it and waits.
func yieldBed(t *testing.T, h *hangingDocker, src string) (d *Loop, fg *fakeForeground, logs *testbed.Buffer, stop func()) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	logs = &testbed.Buffer{}
	fg = &fakeForeground{}
	d = &Loop{Docker: h, Events: h, Foreground: fg, Log: slog.New(slog.NewTextHandler(logs, nil))}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, path, []byte(src), cfg, nil, nil) }()
	synctest.Wait()
	return d, fg, logs, func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

const yieldImages = `
image "bg1" { expected = "reg:5000/bg1:1" }
image "bg2" { expected = "reg:5000/bg2:1" }
image "bg3" { expected = "reg:5000/bg3:1" }
image "fg"  { expected = "reg:5000/fg:1" }
`

var yieldRemote = map[string]registry.Image{
	"reg:5000/bg1:1": {ID: "sha256:b1"}, "reg:5000/bg2:1": {ID: "sha256:b2"},
	"reg:5000/bg3:1": {ID: "sha256:b3"}, "reg:5000/fg:1": {ID: "sha256:f"},
}

func started(h *hangingDocker, refs ...string) []int {
	out := make([]int, len(refs))
	for i, r := range refs {
		out[i] = h.count(h.started, r)
	}
	return out
}

// TestYieldCancel: while a starting task waits for an image that is not
// present, the background pulls in flight are cancelled and none starts;
// the waited-for image goes first; when it is there the backlog resumes
// and completes, no cancelled pull counted as a failure, the episode
// logged once at each end.
func TestYieldCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(yieldRemote, "reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1", "reg:5000/fg:1")
		d, fg, logs, stop := yieldBed(t, h, daemonBase+"concurrency = 3\nnomad {\n  background_pulls = 2\n}\n"+yieldImages)
		defer stop()
		// Before any task waits: two background pulls (the budget), the
		// third image waits for a slot.
		if got := started(h, "reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1", "reg:5000/fg:1"); got[0]+got[1]+got[2]+got[3] != 2 {
			t.Fatalf("pulls started before yielding: %v, want 2 (background_pulls)", got)
		}

		fg.report(Foreground{Waiting: []string{"reg:5000/fg:1"}, WaitedBy: map[string][]string{"reg:5000/fg:1": {"default/web/g/t"}}, Live: true})
		synctest.Wait()
		if n := h.count(h.started, "reg:5000/fg:1"); n != 1 {
			t.Errorf("the image a task waits for: %d pulls, want it started first", n)
		}
		bgStarted := 0
		for _, r := range []string{"reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1"} {
			bgStarted += h.count(h.started, r)
			if h.count(h.started, r) != h.count(h.cancelled, r) {
				t.Errorf("%s: %d started, %d cancelled: a background pull still runs while yielding", r, h.count(h.started, r), h.count(h.cancelled, r))
			}
		}
		if bgStarted != 2 {
			t.Errorf("background pulls started while yielding: %d, want only the 2 before", bgStarted)
		}
		st := d.Snapshot().Foreground
		if st == nil || !st.Yielding || st.Episodes != 1 || st.Cancelled != 2 || st.YieldingSince == nil ||
			len(st.Waiting) != 1 || !strings.Contains(st.Why, "default/web/g/t waits for reg:5000/fg:1") {
			t.Fatalf("status while yielding: %+v", st)
		}
		// The same set again (another allocation update): no new episode.
		fg.report(Foreground{Waiting: []string{"reg:5000/fg:1"}, Live: true})
		synctest.Wait()

		// The task's image arrives (the agent's own pull): yielding ends.
		h.release("reg:5000/fg:1")
		synctest.Wait()
		if st := d.Snapshot().Foreground; st.Yielding || st.Episodes != 1 || len(st.Waiting) != 0 {
			t.Fatalf("status after the image came: %+v", st)
		}
		for _, r := range []string{"reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1"} {
			h.release(r)
		}
		synctest.Wait()
		for _, img := range d.Snapshot().Images {
			if img.State != StatePresent || img.Attempts != 0 {
				t.Errorf("%s after the backlog: %s, %d failed attempts, want present and none", img.Name, img.State, img.Attempts)
			}
		}
		if n := strings.Count(logs.String(), "yielding to Nomad: a task starting"); n != 1 {
			t.Errorf("episode start logged %d times, want once:\n%s", n, logs.String())
		}
		if n := strings.Count(logs.String(), "yielding to Nomad ended"); n != 1 {
			t.Errorf("episode end logged %d times, want once:\n%s", n, logs.String())
		}
	})
}

// TestYieldPause: with yield = "pause" the pulls in flight go on, no new
// background pull starts, and the waited-for image still goes first.
func TestYieldPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(yieldRemote, "reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1")
		d, fg, _, stop := yieldBed(t, h, daemonBase+"concurrency = 2\nnomad {\n  yield = \"pause\"\n}\n"+yieldImages)
		defer stop()
		if got := started(h, "reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1"); got[0] != 1 || got[1]+got[2] != 0 {
			t.Fatalf("started before yielding: %v, want bg1 only (background_pulls 1)", got)
		}
		// A task waits for an image no entry keeps (another job's) and for fg.
		fg.report(Foreground{Waiting: []string{"reg:5000/fg:1", "reg:5000/other:1"}, Live: true})
		synctest.Wait()
		if n := h.count(h.started, "reg:5000/fg:1"); n != 1 {
			t.Errorf("fg: %d pulls, want 1", n)
		}
		h.release("reg:5000/bg1:1") // the paused pull finishes
		synctest.Wait()
		if got := started(h, "reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1"); got[0] != 1 || got[1]+got[2] != 0 || h.count(h.cancelled, "reg:5000/bg1:1") != 0 {
			t.Fatalf("while paused: started %v, bg1 cancelled %d; want bg1 finished, nothing new", got, h.count(h.cancelled, "reg:5000/bg1:1"))
		}
		if st := d.Snapshot().Foreground; !st.Yielding || st.Cancelled != 0 || len(st.Waiting) != 1 || st.Waiting[0] != "reg:5000/other:1" {
			t.Fatalf("status: %+v, want yielding for other:1 only (fg is present)", st)
		}
		fg.report(Foreground{Live: true}) // the task started
		synctest.Wait()
		if got := started(h, "reg:5000/bg2:1", "reg:5000/bg3:1"); got[0]+got[1] != 1 {
			t.Errorf("after the episode: %v, want one more background pull (the budget)", got)
		}
	})
}

// TestYieldOffAndBudget: yield = "off" never holds back, and the budget is
// concurrency without a nomad block.
func TestYieldOffAndBudget(t *testing.T) {
	for _, tc := range []struct {
		name, settings string
		want           int
	}{
		{"off", "nomad {\n  yield = \"off\"\n  background_pulls = 3\n}\n", 3},
		{"no nomad block", "", 3},
		{"default budget", "nomad {}\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHangingDocker(yieldRemote, "reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1", "reg:5000/fg:1")
				_, fg, _, stop := yieldBed(t, h, daemonBase+"concurrency = 3\n"+tc.settings+yieldImages)
				defer stop()
				if tc.name == "off" { // a waiting image holds nothing back
					fg.report(Foreground{Waiting: []string{"reg:5000/other:1"}, Live: true})
					synctest.Wait()
				}
				got := started(h, "reg:5000/bg1:1", "reg:5000/bg2:1", "reg:5000/bg3:1", "reg:5000/fg:1")
				if n := got[0] + got[1] + got[2] + got[3]; n != tc.want {
					t.Errorf("pulls in flight: %v, want %d", got, tc.want)
				}
			})
		})
	}
}

// TestYieldCancelledResync: a resync cancelled to yield leaves its image
// present (readiness untouched), counts no failure, and runs again after.
func TestYieldCancelledResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(yieldRemote)
		d, fg, _, stop := yieldBed(t, h, daemonBase+"nomad {}\nimage \"bg1\" { expected = \"reg:5000/bg1:1\" }\n")
		defer stop()
		if s, _ := imageState(d, "bg1"); s.State != StatePresent {
			t.Fatalf("bg1 before the resync: %+v", s)
		}
		h.setHang("reg:5000/bg1:1", true)
		time.Sleep(67 * time.Minute) // the resync (1h + up to 10%) comes due and hangs, short of pull_timeout
		synctest.Wait()
		if n := h.count(h.started, "reg:5000/bg1:1"); n != 2 {
			t.Fatalf("pulls of bg1: %d, want the resync in flight", n)
		}
		fg.report(Foreground{Waiting: []string{"reg:5000/fg:1"}, Live: true})
		synctest.Wait()
		s, _ := imageState(d, "bg1")
		if h.count(h.cancelled, "reg:5000/bg1:1") != 1 || s.State != StatePresent || s.ImageID == "" || s.Attempts != 0 || s.LastError != "" {
			t.Fatalf("bg1 after its resync was cancelled: %+v", s)
		}
		if ok, why := d.Snapshot().Ready(); !ok {
			t.Errorf("not ready after a cancelled resync: %s", why)
		}
		h.release("reg:5000/bg1:1")
		fg.report(Foreground{Live: true})
		synctest.Wait()
		if n := h.count(h.started, "reg:5000/bg1:1"); n != 3 {
			t.Errorf("pulls of bg1: %d, want the resync run again after the episode", n)
		}
	})
}
