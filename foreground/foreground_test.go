package foreground

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// recorded returns the allocations transcript G's steps answered, decoded
// as the fake takes them: placed (pending, no task state), pulling (the
// task pending, "Downloading image"), moved (the task past its pull).
func recorded(t *testing.T) (placed, pulling, moved map[string]any) {
	t.Helper()
	steps := nomadtest.Transcript(t, "G")
	one := func(i int) map[string]any {
		var allocs []map[string]any
		if err := json.Unmarshal(steps[i].Response.Body, &allocs); err != nil || len(allocs) != 1 {
			t.Fatalf("G step %d: %v", i, err)
		}
		return allocs[0]
	}
	return one(4), one(5), one(6)
}

const gImage = "127.0.0.1:5149/fg/app:1796360771"

// images is a Docker whose present images the test sets.
type images struct {
	mu      sync.Mutex
	present map[string]bool
}

func (im *images) Inspect(_ context.Context, ref string) (registry.Image, error) {
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.present[ref] {
		return registry.Image{ID: "sha256:x"}, nil
	}
	return registry.Image{}, fmt.Errorf("inspecting %s: %w", ref, registry.ErrNotFound)
}

func (im *images) set(ref string) {
	im.mu.Lock()
	defer im.mu.Unlock()
	im.present[ref] = true
}

// watch runs a Watcher against the fake with node_id set (or, when
// nodeID is "", learnt from /v1/agent/self) and returns what it reports.
func watch(t *testing.T, s *nomadtest.Server, im *images, nodeID string) <-chan agent.Foreground {
	t.Helper()
	out := make(chan agent.Foreground, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	w := &Watcher{Images: im, Retry: backoff.Policy{Min: time.Millisecond, Max: 10 * time.Millisecond}, Wait: time.Minute, Recheck: time.Minute}
	go func() {
		defer close(done)
		w.Run(ctx, config.Nomad{Address: s.URL, NodeID: nodeID}, func(f agent.Foreground) { out <- f })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return out
}

func next(t *testing.T, ch <-chan agent.Foreground, what string) agent.Foreground {
	t.Helper()
	select {
	case f := <-ch:
		return f
	case <-time.After(10 * time.Second):
		t.Fatalf("no report: %s", what)
	}
	return agent.Foreground{}
}

func fake(t *testing.T, node string) *nomadtest.Server {
	t.Helper()
	s, err := nomadtest.New(nomadtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	s.SetNode(map[string]any{"ID": node, "Name": "vm"})
	return s
}

// TestWatchAsRecorded: the allocations of transcript G, in order, through
// the official client and the fake's blocking queries: the image is
// waited for from the placement (before any task state) until the task
// moved on, and then not.
func TestWatchAsRecorded(t *testing.T) {
	placed, pulling, moved := recorded(t)
	node := placed["NodeID"].(string)
	for _, byID := range []bool{true, false} {
		t.Run(fmt.Sprintf("node_id set %v", byID), func(t *testing.T) {
			s := fake(t, node)
			im := &images{present: map[string]bool{}}
			id := node
			if !byID {
				id = "" // learnt from /v1/agent/self
			}
			ch := watch(t, s, im, id)
			if f := next(t, ch, "the first answer"); !f.Live || len(f.Waiting) != 0 || f.Index != 1 {
				t.Fatalf("no allocations: %+v", f)
			}
			s.PutAllocation(placed)
			f := next(t, ch, "the placement")
			if !slices.Equal(f.Waiting, []string{gImage}) || !slices.Equal(f.WaitedBy[gImage], []string{"default/rec-g/g/t"}) {
				t.Fatalf("placed: %+v", f)
			}
			s.PutAllocation(pulling) // the same image waited for: nothing new to say
			im.set(gImage)           // Nomad's pull ended...
			s.PutAllocation(moved)   // ...and the task moved on
			if f := next(t, ch, "the task moving on"); !f.Live || len(f.Waiting) != 0 {
				t.Fatalf("after the pull: %+v", f)
			}
		})
	}
}

// TestWatchNomadDown: while the allocations can't be read nothing is
// waited for and the error is reported; then it follows again.
func TestWatchNomadDown(t *testing.T) {
	placed, _, _ := recorded(t)
	node := placed["NodeID"].(string)
	s := fake(t, node)
	s.PutAllocation(placed)
	s.SetFailStatus(http.StatusInternalServerError)
	ch := watch(t, s, &images{present: map[string]bool{}}, node)
	if f := next(t, ch, "the failure"); f.Live || f.Error == "" || f.ErrorSince == nil || len(f.Waiting) != 0 {
		t.Fatalf("Nomad failing: %+v", f)
	}
	s.SetFailStatus(0)
	if f := next(t, ch, "the recovery"); !f.Live || f.Error != "" || !slices.Equal(f.Waiting, []string{gImage}) {
		t.Fatalf("Nomad back: %+v", f)
	}
}

func task(name, image string) *api.Task {
	return &api.Task{Name: name, Driver: "docker", Config: map[string]any{"image": image}}
}

func alloc(client, desired string, tasks []*api.Task, states map[string]*api.TaskState) *api.Allocation {
	g := "g"
	return &api.Allocation{
		Namespace: "default", JobID: "j", TaskGroup: g, ClientStatus: client, DesiredStatus: desired, TaskStates: states,
		Job: &api.Job{TaskGroups: []*api.TaskGroup{{Name: &g, Tasks: tasks}}},
	}
}

// TestStarting: which tasks count as starting, and which image each
// pulls.
func TestStarting(t *testing.T) {
	pending := &api.TaskState{State: "pending"}
	running := &api.TaskState{State: "running"}
	post := task("post", "post:1")
	post.Lifecycle = &api.TaskLifecycle{Hook: api.TaskLifecycleHookPoststop}
	raw := &api.Task{Name: "raw", Driver: "raw_exec", Config: map[string]any{"command": "/bin/true"}}
	interp := task("interp", "app:${NOMAD_META_v}")
	driver := &api.TaskState{State: "pending", Events: []*api.TaskEvent{{Type: "Received"}, {Type: "Driver", Details: map[string]string{"image": "app:7"}}}}
	got := Starting([]*api.Allocation{
		alloc("pending", "run", []*api.Task{task("a", "a:1"), task("b", "b:1"), post, raw}, map[string]*api.TaskState{"b": running}),
		alloc("running", "run", []*api.Task{task("c", "ghcr.io/x/c")}, map[string]*api.TaskState{"c": pending}),
		alloc("pending", "stop", []*api.Task{task("d", "d:1")}, nil),
		alloc("complete", "run", []*api.Task{task("e", "e:1")}, nil),
		alloc("pending", "run", []*api.Task{interp}, nil),
		alloc("pending", "run", []*api.Task{interp}, map[string]*api.TaskState{"interp": driver}),
		alloc("pending", "run", []*api.Task{task("bad", "NOT A REF")}, nil),
		{ClientStatus: "pending", DesiredStatus: "run"}, // no job
	})
	want := map[string][]string{
		"docker.io/library/a:1":   {"default/j/g/a"},
		"ghcr.io/x/c:latest":      {"default/j/g/c"},
		"docker.io/library/app:7": {"default/j/g/interp"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// TestGiveUp: an image waited for longer than MaxWait is no longer
// reported, and is listed; once no task waits for it, it is forgotten.
func TestGiveUp(t *testing.T) {
	tr := &tracker{firstSeen: map[string]time.Time{}}
	t0 := time.Unix(1000, 0)
	log := (&Watcher{}).log()
	if got := tr.bound([]string{"a", "b"}, t0, time.Minute, log); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("at first: %v", got)
	}
	if got := tr.bound([]string{"a", "b", "c"}, t0.Add(2*time.Minute), time.Minute, log); !slices.Equal(got, []string{"c"}) || !slices.Equal(tr.gaveUp, []string{"a", "b"}) {
		t.Fatalf("past max: %v, gave up %v", got, tr.gaveUp)
	}
	if got := tr.bound([]string{"b"}, t0.Add(3*time.Minute), time.Minute, log); len(got) != 0 || !slices.Equal(tr.gaveUp, []string{"b"}) {
		t.Fatalf("a's task moved on: %v, gave up %v", got, tr.gaveUp)
	}
	if got := tr.bound([]string{"a"}, t0.Add(4*time.Minute), time.Minute, log); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("a waited for anew: %v", got)
	}
}
