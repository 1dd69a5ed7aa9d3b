// Command foreground-bench measures how much the agent slows the pulls
// Nomad waits for (issue 22, "Foreground first"): a private dockerd and a
// docker-registry on 127.0.0.1 (internal/testbed) with internal/faultproxy
// in front answering every request after -delay, and the Nomad fake
// (internal/nomadtest) holding this node's allocations. Each phase starts
// from a daemon that has none of the images, runs `prefetch run` (the
// daemon package, in process: the production wiring, foreground watcher
// included) on a backlog of multi-layer images, waits until the backlog is
// under way, then places a task on the node (a pending allocation) and
// pulls its image through the same daemon, as Nomad's docker driver does,
// and times that pull. Phases, in one run:
//
//	alone   the foreground pull with no agent running
//	cancel  the agent with yield = "cancel" (the default)
//	pause   the agent with yield = "pause"
//	off     the agent with yield = "off" and background_pulls = concurrency
//	        (what the agent did before issue 22)
//
// It prints Markdown on stdout, progress on stderr, stops by itself
// (-timeout) and on SIGINT/SIGTERM, and removes everything it started.
// Run it through bench/foreground.sh.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/nomad-prefetch/nomad-prefetch/bench/internal/benchkit"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

type options struct {
	phases      string
	delay       time.Duration
	bgImages    int
	bgLayers    int
	fgLayers    int
	layerSize   int
	concurrency int
	reps        int
	startAfter  string
	bandwidth   int
	timeout     time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.phases, "run", "alone,cancel,pause,off", "phases, comma-separated, run in this order each repetition")
	flag.DurationVar(&o.delay, "delay", 3*time.Second, "the registry answers every request after this long")
	flag.IntVar(&o.bgImages, "bg-images", 4, "backlog images")
	flag.IntVar(&o.bgLayers, "bg-layers", 6, "layers of each backlog image")
	flag.IntVar(&o.fgLayers, "fg-layers", 2, "layers of the foreground image")
	flag.IntVar(&o.layerSize, "layer-size", 4<<20, "bytes of each layer")
	flag.IntVar(&o.concurrency, "c", 2, "the agent's concurrency")
	flag.IntVar(&o.reps, "reps", 1, "repetitions of the phases")
	flag.IntVar(&o.bandwidth, "bandwidth", 0, "bytes a second of the registry's one link, shared by every pull (0: unlimited)")
	flag.StringVar(&o.startAfter, "start-after", "blobs", "when the task is placed: \"blobs\", once the backlog's first pull asked for 2 blobs (its layers under way), or \"manifest\", as it asks for its manifest (its layers then meet the task's)")
	flag.DurationVar(&o.timeout, "timeout", 9*time.Minute, "stop everything after this long")
	flag.Parse()
	benchkit.Main("foreground-bench", o.timeout, func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}

var progress = benchkit.Progress

// result is one phase's measurement.
type result struct {
	phase     string
	fg        time.Duration // the foreground pull
	backlog   time.Duration // from the agent's start until every backlog image is present
	cancelled uint64
	episodes  uint64
	bgDuring  int // background manifest requests that arrived during the foreground pull
}

type env struct {
	o       options
	bed     *testbed.Bed
	proxy   *faultproxy.Proxy
	nomad   *nomadtest.Server
	node    string
	dir     string
	backlog []string
	fgRef   string
	seq     int
}

func run(ctx context.Context, o options, out io.Writer) error {
	start := time.Now()
	progress("starting dockerd and a registry")
	bed, err := testbed.Start()
	if err != nil {
		return err
	}
	defer bed.Close()
	reg, err := bed.StartRegistry("fg", testbed.RegistryOptions{})
	if err != nil {
		return err
	}
	defer reg.Stop()
	proxy, err := faultproxy.Start("http://" + reg.Addr)
	if err != nil {
		return err
	}
	defer proxy.Close()
	nomad, err := nomadtest.New(nomadtest.Options{})
	if err != nil {
		return err
	}
	nomad.Start()
	defer nomad.Close()
	e := &env{o: o, bed: bed, proxy: proxy, nomad: nomad, node: "f0b7b6a0-c1cd-07f7-8de5-1a3403c998c5", dir: bed.Dir}
	nomad.SetNode(map[string]any{"ID": e.node, "Name": "bench"})

	progress("seeding %d backlog images of %d x %d MiB layers and a foreground image of %d", o.bgImages, o.bgLayers, o.layerSize>>20, o.fgLayers)
	for i := range o.bgImages {
		repo := fmt.Sprintf("bg/img%d:1", i)
		if _, err := testbed.SeedLayers(ctx, reg.Addr+"/"+repo, "bench-bg-"+repo, o.bgLayers, o.layerSize); err != nil {
			return err
		}
		e.backlog = append(e.backlog, proxy.Addr+"/"+repo)
	}
	if _, err := testbed.SeedLayers(ctx, reg.Addr+"/fg/app:1", "bench-fg", o.fgLayers, o.layerSize); err != nil {
		return err
	}
	e.fgRef = proxy.Addr + "/fg/app:1"
	proxy.SetDelay(o.delay)
	proxy.SetBandwidth(o.bandwidth)

	var results []result
	for rep := range o.reps {
		for _, phase := range strings.Split(o.phases, ",") {
			progress("rep %d: phase %s", rep+1, phase)
			r, err := e.phase(ctx, phase)
			if err != nil {
				return fmt.Errorf("phase %s: %w", phase, err)
			}
			progress("  foreground pull %.2f s, backlog %.2f s, cancelled %d", r.fg.Seconds(), r.backlog.Seconds(), r.cancelled)
			results = append(results, r)
		}
	}
	return report(out, e, results, time.Since(start))
}

// phase runs one measurement from a daemon with none of the images.
func (e *env) phase(ctx context.Context, phase string) (result, error) {
	r := result{phase: phase}
	if err := e.bed.Remove(ctx, append(slices.Clone(e.backlog), e.fgRef)...); err != nil {
		return r, err
	}
	e.seq++
	allocID := fmt.Sprintf("00000000-0000-0000-0000-%012d", e.seq)
	if phase == "alone" {
		t0 := time.Now()
		if err := e.pull(ctx); err != nil {
			return r, err
		}
		r.fg = time.Since(t0)
		return r, nil
	}
	yield, budget := phase, 1
	switch phase {
	case "cancel", "pause":
	case "off":
		budget = e.o.concurrency
	default:
		return r, fmt.Errorf("unknown phase %q (alone, cancel, pause, off)", phase)
	}
	agentStart := time.Now()
	a, err := e.startAgent(ctx, yield, budget)
	if err != nil {
		return r, err
	}
	defer func() {
		if err := a.Stop(); err != nil {
			progress("  prefetch run: %v", err)
		}
	}()
	// The backlog is under way: two background blobs asked for, or its
	// first manifest.
	what, n := "/blobs/", 2
	if e.o.startAfter == "manifest" {
		what, n = "/manifests/", 1
	}
	if err := e.waitRequests(ctx, what, n); err != nil {
		return r, err
	}
	// Nomad places a task whose image is absent, and its docker driver
	// pulls at once.
	e.nomad.PutAllocation(allocation(allocID, e.node, e.fgRef, "pending"))
	t0 := time.Now()
	if err := e.pull(ctx); err != nil {
		return r, err
	}
	r.fg = time.Since(t0)
	fgEnd := time.Now()
	e.nomad.PutAllocation(allocation(allocID, e.node, e.fgRef, "running"))
	for _, req := range e.proxy.Requests() {
		if strings.Contains(req.Path, "/bg/") && strings.Contains(req.Path, "/manifests/") && req.At.After(t0) && req.At.Before(fgEnd) {
			r.bgDuring++
		}
	}
	for {
		s, err := a.Status(ctx)
		if err == nil && len(s.Missing()) == 0 && len(s.Images) == len(e.backlog) {
			r.backlog = time.Since(agentStart)
			if s.Foreground != nil {
				r.cancelled, r.episodes = s.Foreground.Cancelled, s.Foreground.Episodes
			}
			break
		}
		select {
		case <-ctx.Done():
			return r, context.Cause(ctx)
		case <-time.After(200 * time.Millisecond):
		}
	}
	e.nomad.DeleteAllocation(allocID)
	return r, nil
}

// pull pulls the foreground image as Nomad's docker driver does: an image
// pull through the daemon's API, read to its end.
func (e *env) pull(ctx context.Context) error {
	rc, err := e.bed.Client.ImagePull(ctx, e.fgRef, client.ImagePullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	for msg, err := range rc.JSONMessages(ctx) {
		if err != nil {
			return err
		}
		if msg.Error != nil {
			return errors.New(msg.Error.Message)
		}
	}
	_, err = e.bed.Client.ImageInspect(ctx, e.fgRef)
	return err
}

// waitRequests waits until n more GETs of the backlog whose path holds
// what arrived than had before.
func (e *env) waitRequests(ctx context.Context, what string, n int) error {
	count := func() int {
		got := 0
		for _, r := range e.proxy.Requests() {
			if r.Method == "GET" && strings.Contains(r.Path, what) && strings.Contains(r.Path, "/bg/") {
				got++
			}
		}
		return got
	}
	before := count()
	for {
		got := count()
		if got-before >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startAgent runs prefetch run on the backlog.
func (e *env) startAgent(ctx context.Context, yield string, budget int) (*benchkit.Agent, error) {
	dir := filepath.Join(e.dir, fmt.Sprintf("agent-%d", e.seq))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	src := fmt.Sprintf("docker {\n  host = %q\n}\nconcurrency = %d\nnomad {\n  address = %q\n  node_id = %q\n  yield = %q\n  background_pulls = %d\n  infra_image = \"\"\n}\n",
		e.bed.Host, e.o.concurrency, e.nomad.URL, e.node, yield, budget)
	for i, ref := range e.backlog {
		src += fmt.Sprintf("image \"bg%d\" { expected = %q }\n", i, ref)
	}
	path := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		return nil, err
	}
	listen, err := testbed.UnusedAddr()
	if err != nil {
		return nil, err
	}
	return benchkit.StartAgent(ctx, dir, path, listen)
}

func allocation(id, node, image, status string) map[string]any {
	a := map[string]any{
		"ID": id, "NodeID": node, "Namespace": "default", "JobID": "bench", "TaskGroup": "g",
		"DesiredStatus": "run", "ClientStatus": status,
		"Job": map[string]any{"ID": "bench", "Namespace": "default", "TaskGroups": []any{map[string]any{
			"Name": "g", "Tasks": []any{map[string]any{"Name": "t", "Driver": "docker", "Config": map[string]any{"image": image}}},
		}}},
	}
	if status == "running" {
		a["TaskStates"] = map[string]any{"t": map[string]any{"State": "running"}}
	}
	return a
}

func report(w io.Writer, e *env, results []result, took time.Duration) error {
	info, _ := e.bed.Client.Info(context.Background(), client.InfoOptions{})
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	bw := "unlimited"
	if e.o.bandwidth > 0 {
		bw = fmt.Sprintf("%d MB/s shared", e.o.bandwidth/1000000)
	}
	fmt.Fprintf(w, "Run: %s UTC, %d cores, Linux %s, %s; dockerd %s (storage driver %s), registry delay %s per request, bandwidth %s; took %s.\n\n",
		time.Now().UTC().Format("2006-01-02 15:04"), runtime.NumCPU(), strings.TrimSpace(string(kernel)), runtime.Version(),
		info.Info.ServerVersion, info.Info.Driver, e.o.delay, bw, took.Round(time.Second))
	fmt.Fprintf(w, "Backlog: %d images of %d layers of %d MiB; foreground image: %d layers; agent concurrency %d; the task placed after the backlog's first %s.\n\n",
		e.o.bgImages, e.o.bgLayers, e.o.layerSize>>20, e.o.fgLayers, e.o.concurrency, map[string]string{"blobs": "2 blob requests", "manifest": "manifest request"}[e.o.startAfter])
	fmt.Fprintln(w, "| phase | foreground pull | × alone | backlog complete after | background pulls cancelled | background manifests asked during the foreground pull |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- |")
	alone := map[int]time.Duration{}
	rep := 0
	for i, r := range results {
		if r.phase == "alone" {
			rep = i
			alone[rep] = r.fg
		}
		ratio := "-"
		if a := alone[rep]; a > 0 && r.phase != "alone" {
			ratio = fmt.Sprintf("%.2f", r.fg.Seconds()/a.Seconds())
		}
		backlog, cancelled, during := "-", "-", "-"
		if r.phase != "alone" {
			backlog = fmt.Sprintf("%.1f s", r.backlog.Seconds())
			cancelled = fmt.Sprint(r.cancelled)
			during = fmt.Sprint(r.bgDuring)
		}
		fmt.Fprintf(w, "| %s | %.2f s | %s | %s | %s | %s |\n", r.phase, r.fg.Seconds(), ratio, backlog, cancelled, during)
	}
	return nil
}
