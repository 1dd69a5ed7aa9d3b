package foreground

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

var bed *testbed.Bed

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, &bed)) }

// logEvents is a slog handler that keeps every message, so that a test
// waits for what the agent says rather than for time to pass.
type logEvents struct {
	mu    sync.Mutex
	msgs  []string
	moved chan struct{}
}

func newLogEvents() *logEvents { return &logEvents{moved: make(chan struct{})} }

func (l *logEvents) Enabled(context.Context, slog.Level) bool { return true }
func (l *logEvents) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logEvents) WithGroup(string) slog.Handler            { return l }
func (l *logEvents) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, b.String())
	close(l.moved)
	l.moved = make(chan struct{})
	return nil
}

// wait returns once n messages containing all of parts were logged.
func (l *logEvents) wait(ctx context.Context, t *testing.T, n int, parts ...string) {
	t.Helper()
	for {
		l.mu.Lock()
		got, moved := 0, l.moved
		for _, m := range l.msgs {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(m, p)
			}
			if all {
				got++
			}
		}
		l.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-moved:
		case <-ctx.Done():
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Fatalf("waiting for %d log line(s) with %q: %v; the log:\n%s", n, parts, ctx.Err(), strings.Join(l.msgs, "\n"))
		}
	}
}

// TestYieldsToNomadsPull runs the agent's loop and this watcher against a
// real dockerd, a registry answering every request after a delay, and the
// Nomad fake: a backlog of multi-layer images is being pulled when Nomad
// places a task whose image is absent. The agent cancels its background
// pull and starts none while the task waits (no background manifest is
// asked for during the episode), Nomad's pull (done here as its docker
// driver does, through the same daemon) goes through, and the backlog
// then completes with no failure counted. How long each pull takes is
// measured by bench/foreground.sh, not asserted here.
func TestYieldsToNomadsPull(t *testing.T) {
	testbed.Need(t, bed)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	reg, proxy := bed.ProxiedRegistry(t, "fg")
	var backlog []string
	for i := range 3 {
		repo := fmt.Sprintf("bg/img%d:1", i)
		if _, err := testbed.SeedLayers(ctx, reg.Addr+"/"+repo, t.Name()+repo, 4, 512<<10); err != nil {
			t.Fatal(err)
		}
		backlog = append(backlog, proxy.Addr+"/"+repo)
	}
	if _, err := testbed.SeedLayers(ctx, reg.Addr+"/fg/app:1", t.Name()+"fg", 2, 512<<10); err != nil {
		t.Fatal(err)
	}
	fgRef := proxy.Addr + "/fg/app:1"
	t.Cleanup(func() { _ = bed.Remove(context.Background(), append(backlog, fgRef)...) })
	proxy.SetDelay(300 * time.Millisecond)

	placed, _, _ := recorded(t)
	node := placed["NodeID"].(string)
	nomad := fake(t, node)
	src := fmt.Sprintf("retry_initial = \"1h\"\nretry_max = \"1h\"\nconcurrency = 2\nnomad {\n  address = %q\n  node_id = %q\n}\n", nomad.URL, node)
	for i, ref := range backlog {
		src += fmt.Sprintf("image \"bg%d\" { expected = %q }\n", i, ref)
	}
	path := filepath.Join(t.TempDir(), "config.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := registry.NewEngine(registry.Options{Host: bed.Host})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	logs := newLogEvents()
	log := slog.New(logs)
	loop := &agent.Loop{Docker: eng, Events: eng, Log: log,
		Foreground: &Watcher{Images: eng, Log: log, Recheck: 200 * time.Millisecond}}
	lctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- loop.Run(lctx, path, []byte(src), cfg, nil, nil) }()
	defer func() { stop(); <-done }()

	// The backlog is under way: a background layer is being fetched.
	if err := proxy.WaitFor(ctx, "GET blob", "/bg/"); err != nil {
		t.Fatal(err)
	}
	// Nomad places a task whose image is absent.
	alloc := clone(t, placed)
	setImage(alloc, fgRef)
	nomad.PutAllocation(alloc)
	logs.wait(ctx, t, 1, "yielding to Nomad: a task starting", fgRef)
	yieldStart := time.Now()

	// Nomad's docker driver pulls it, then the task starts.
	rc, err := bed.Client.ImagePull(ctx, fgRef, client.ImagePullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if _, err := bed.Client.ImageInspect(ctx, fgRef); err != nil {
		t.Fatalf("Nomad's pull of %s: %v", fgRef, err)
	}
	alloc["ClientStatus"] = "running"
	alloc["TaskStates"] = map[string]any{"t": map[string]any{"State": "running"}}
	nomad.PutAllocation(alloc)
	logs.wait(ctx, t, 1, "yielding to Nomad ended")
	yieldEnd := time.Now()

	// The lines come from the transitions; the snapshot is published after
	// the loop's pass, and a fetch resumed after the episode may still be
	// under way: wait (bounded by ctx) for the state they settle in.
	logs.wait(ctx, t, len(backlog), "image ready")
	s := loop.Snapshot()
	for ctx.Err() == nil && slices.ContainsFunc(s.Images, func(img agent.ImageStatus) bool { return img.State != agent.StatePresent }) {
		time.Sleep(10 * time.Millisecond) // bounded by ctx; the publish follows the log line within the pass
		s = loop.Snapshot()
	}
	for _, img := range s.Images {
		if img.State != agent.StatePresent || img.Attempts != 0 {
			t.Errorf("%s after the episode: %s, %d failed attempts; want present, none", img.Expected, img.State, img.Attempts)
		}
	}
	if f := s.Foreground; f == nil || f.Episodes != 1 || f.Cancelled < 1 || f.Yielding || !f.Live {
		t.Errorf("foreground status: %+v; want one episode that cancelled the pull in flight", f)
	}
	for _, r := range proxy.Requests() {
		if strings.Contains(r.Path, "/bg/") && strings.Contains(r.Path, "/manifests/") && r.At.After(yieldStart) && r.At.Before(yieldEnd) {
			t.Errorf("a background pull started while yielding: %s %s at +%v", r.Method, r.Path, r.At.Sub(yieldStart))
		}
	}
}

func clone(t *testing.T, m map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	job := out["Job"].(map[string]any)
	jc := map[string]any{}
	for k, v := range job {
		jc[k] = v
	}
	out["Job"] = jc
	return out
}

// setImage points the recorded allocation's task at ref.
func setImage(alloc map[string]any, ref string) {
	job := alloc["Job"].(map[string]any)
	g := job["TaskGroups"].([]any)[0].(map[string]any)
	task := g["Tasks"].([]any)[0].(map[string]any)
	task["Config"] = map[string]any{"image": ref}
}
