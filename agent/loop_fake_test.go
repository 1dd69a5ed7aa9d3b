package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// hangingDocker is a fakeDocker whose pulls of the refs in hang block until
// their context ends (or, once release(ref) is called, until then), and that
// serves image events from a channel; while down is set, subscribing fails
// as with a daemon that is gone, and breakEvents ends the current stream.
type hangingDocker struct {
	*fakeDocker
	hang      map[string]bool
	mu        sync.Mutex
	started   map[string]int
	cancelled map[string]int
	inFlight  map[string]int
	maxFlight map[string]int
	gates     map[string]chan struct{} // closed by release
	slow      map[string]bool          // a cancelled pull returns only once released
	events    chan registry.ImageEvent
	down      bool
	broken    chan struct{}
}

//lint:ignore ST1005 the Docker client's own wording
var errDaemonGone = errors.New("Cannot connect to the Docker daemon at unix:///fake.sock. Is the docker daemon running?")

func (h *hangingDocker) setHang(ref string, on bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hang[ref] = on
	if on {
		h.gates[ref] = make(chan struct{})
	}
}

// release lets the hanging pulls of ref return (as failed, if their
// context ended, else as their fakeDocker pull does).
func (h *hangingDocker) release(ref string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.hang[ref] = false
	if g, ok := h.gates[ref]; ok {
		close(g)
		delete(h.gates, ref)
	}
}

func (h *hangingDocker) setDown(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
}

func (h *hangingDocker) breakEvents() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.broken != nil {
		close(h.broken)
		h.broken = nil
	}
}

func newHangingDocker(remote map[string]registry.Image, hang ...string) *hangingDocker {
	h := &hangingDocker{
		fakeDocker: &fakeDocker{local: map[string]registry.Image{}, remote: remote},
		hang:       map[string]bool{}, started: map[string]int{}, cancelled: map[string]int{},
		inFlight: map[string]int{}, maxFlight: map[string]int{}, gates: map[string]chan struct{}{}, slow: map[string]bool{},
		events: make(chan registry.ImageEvent),
	}
	for _, r := range hang {
		h.setHang(r, true)
	}
	return h
}

func (h *hangingDocker) Pull(ctx context.Context, ref string, opts registry.PullOptions) error {
	h.mu.Lock()
	h.started[ref]++
	h.inFlight[ref]++
	h.maxFlight[ref] = max(h.maxFlight[ref], h.inFlight[ref])
	hang, gate, slow := h.hang[ref], h.gates[ref], h.slow[ref]
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.inFlight[ref]--
		h.mu.Unlock()
	}()
	if hang {
		select {
		case <-ctx.Done():
			h.mu.Lock()
			h.cancelled[ref]++
			h.mu.Unlock()
			if slow {
				<-gate
			}
			return ctx.Err()
		case <-gate:
		}
	}
	return h.fakeDocker.Pull(ctx, ref, opts)
}

func (h *hangingDocker) count(m map[string]int, ref string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return m[ref]
}

func (h *hangingDocker) Ping(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return errDaemonGone
	}
	return nil
}

func (h *hangingDocker) ImageEvents(ctx context.Context) (<-chan registry.ImageEvent, <-chan error, error) {
	if err := h.Ping(ctx); err != nil {
		return nil, nil, err
	}
	h.mu.Lock()
	broken := make(chan struct{})
	h.broken = broken
	h.mu.Unlock()
	out := make(chan registry.ImageEvent)
	errs := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			select {
			case ev := <-h.events:
				out <- ev
			case <-broken:
				errs <- errors.New("unexpected EOF")
				return
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
		}
	}()
	return out, errs, nil
}

// daemonUnderTest runs a Loop over h with the config in a file, and
// returns a function that rewrites the file and signals the change.
func daemonUnderTest(t *testing.T, h *hangingDocker, src string) (*Loop, func(string)) {
	t.Helper()
	return daemonWith(t, h, src, nil)
}

// daemonWith is daemonUnderTest with a chance to set the Loop's fields
// before it runs.
func daemonWith(t *testing.T, h *hangingDocker, src string, setup func(*Loop)) (*Loop, func(string)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.hcl")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(src)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d := &Loop{Docker: h, Events: h, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if setup != nil {
		setup(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	changed := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, path, []byte(src), cfg, changed, nil) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return d, func(s string) { write(s); changed <- struct{}{} }
}

// eventually waits, on the synctest bubble's clock, until cond holds: each
// round lets every goroutine of the bubble block (synctest.Wait), then moves
// the clock on 25 ms; 10 s of the bubble's time at most. Nothing depends on
// how fast the machine is.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 400 {
		synctest.Wait()
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func imageState(d *Loop, name string) (ImageStatus, bool) {
	for _, img := range d.Snapshot().Images {
		if img.Name == name {
			return img, true
		}
	}
	return ImageStatus{}, false
}

const daemonBase = "retry_initial = \"1h\"\nretry_max = \"1h\"\nresync_interval = \"1h\"\n"

func TestDaemonRemovedWhileInFlight(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		img := registry.Image{ID: "sha256:k"}
		h := newHangingDocker(map[string]registry.Image{"reg:5000/keep:1": img}, "reg:5000/hang:1")
		d, rewrite := daemonUnderTest(t, h, daemonBase+`
	image "keep" { expected = "reg:5000/keep:1" }
	image "hang" { expected = "reg:5000/hang:1" }
	`)
		eventually(t, "the hanging pull to start", func() bool { return h.count(h.started, "reg:5000/hang:1") == 1 })
		eventually(t, "keep present", func() bool { s, _ := imageState(d, "keep"); return s.State == StatePresent })
		if s, _ := imageState(d, "hang"); s.State != StatePulling {
			t.Errorf("hang: got state %q, want pulling", s.State)
		}

		rewrite(daemonBase + `image "keep" { expected = "reg:5000/keep:1" }` + "\n")
		eventually(t, "the pull of the removed image cancelled", func() bool { return h.count(h.cancelled, "reg:5000/hang:1") == 1 })
		eventually(t, "hang gone from the status", func() bool { _, ok := imageState(d, "hang"); return !ok })
		if n := h.count(h.started, "reg:5000/hang:1"); n != 1 {
			t.Errorf("the removed image was pulled %d times, want once", n)
		}
	})
}

func TestDaemonChangedEntryStartsOver(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		img := registry.Image{ID: "sha256:s"}
		h := newHangingDocker(map[string]registry.Image{"reg:5000/src:1": img})
		d, rewrite := daemonUnderTest(t, h, daemonBase+`image "app" { expected = "reg:5000/app:1" }`+"\n")
		eventually(t, "app failed", func() bool { s, _ := imageState(d, "app"); return s.State == StateFailed })
		s, _ := imageState(d, "app")
		if s.Attempts != 1 || s.NextRetry == nil || time.Until(*s.NextRetry) < 30*time.Minute {
			t.Fatalf("app: got %+v, want one attempt and a retry about an hour away", s)
		}
		// A source added: no waiting for the hour-long backoff.
		rewrite(daemonBase + `image "app" {
	  expected = "reg:5000/app:1"
	  sources  = ["reg:5000/src:1"]
	}
	`)
		eventually(t, "app present from the new source", func() bool { s, _ := imageState(d, "app"); return s.State == StatePresent })
		if s, _ := imageState(d, "app"); s.Source != "reg:5000/src:1" || s.Attempts != 0 {
			t.Errorf("app: got %+v, want present from r/src:1 with no failed attempts", s)
		}
	})
}

func TestDaemonImageEvent(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		img := registry.Image{ID: "sha256:e"}
		h := newHangingDocker(map[string]registry.Image{"reg:5000/e:1": img, "reg:5000/other:1": {ID: "sha256:o"}})
		d, _ := daemonUnderTest(t, h, daemonBase+"image \"e\" { expected = \"reg:5000/e:1\" }\nimage \"other\" { expected = \"reg:5000/other:1\" }\n")
		eventually(t, "e present", func() bool { s, _ := imageState(d, "e"); return s.State == StatePresent })
		eventually(t, "other present", func() bool { s, _ := imageState(d, "other"); return s.State == StatePresent })

		h.fakeDocker.mu.Lock()
		delete(h.fakeDocker.local, "reg:5000/e:1") // what Nomad's GC does, by ID
		h.fakeDocker.mu.Unlock()
		h.events <- registry.ImageEvent{Action: "delete", ID: "sha256:e"}
		eventually(t, "e pulled again", func() bool { return h.count(h.started, "reg:5000/e:1") == 2 })
		eventually(t, "e present again", func() bool { s, _ := imageState(d, "e"); return s.State == StatePresent })
		if n := h.count(h.started, "reg:5000/other:1"); n != 1 {
			t.Errorf("an unrelated image was pulled %d times, want once", n)
		}
	})
}

// TestDaemonQueueDoesNotSpin: with more images due than fetch slots, the loop
// waits for a slot instead of spinning on a timer that is always due. (In
// the bubble a spinning loop would also keep the clock from moving, so the
// test would hang to its timeout rather than pass.)
func TestDaemonQueueDoesNotSpin(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := newHangingDocker(nil, "reg:5000/a:1", "reg:5000/b:1", "reg:5000/c:1")
		d, _ := daemonUnderTest(t, h, daemonBase+"concurrency = 1\nimage \"a\" { expected = \"reg:5000/a:1\" }\nimage \"b\" { expected = \"reg:5000/b:1\" }\nimage \"c\" { expected = \"reg:5000/c:1\" }\n")
		eventually(t, "a's pull to hang", func() bool { return h.count(h.started, "reg:5000/a:1") == 1 })
		// Each pass of the loop publishes a snapshot: count passes over a while.
		first := d.snap.Load()
		passes := 0
		for i := 0; i < 20; i++ {
			time.Sleep(10 * time.Millisecond)
			if p := d.snap.Load(); p != first {
				passes++
				first = p
			}
		}
		if passes > 2 {
			t.Errorf("the loop made %d passes in 200ms with nothing to do, want it to wait", passes)
		}
		if n := h.count(h.started, "reg:5000/b:1"); n != 0 {
			t.Errorf("b started with the only slot busy (%d)", n)
		}
	})
}
