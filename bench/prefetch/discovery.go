package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// fakeNomad starts the fake Nomad agent of internal/nomadtest with the node
// of its recorded Nomad 2.0.5 answers.
func (e *env) fakeNomad(bufferSize int) (*nomadtest.Server, error) {
	return e.fakeNomadWith(nomadtest.Options{BufferSize: bufferSize})
}

// fakeNomadWith is fakeNomad with opts.
func (e *env) fakeNomadWith(opts nomadtest.Options) (*nomadtest.Server, error) {
	srv, err := nomadtest.New(opts)
	if err != nil {
		return nil, err
	}
	srv.Start()
	var node map[string]any
	if err := readFixture("node.json", &node); err != nil {
		srv.Close()
		return nil, err
	}
	srv.SetNode(node)
	if webFixture == nil {
		if err := readFixture("job-web.json", &webFixture); err != nil {
			srv.Close()
			return nil, err
		}
	}
	return srv, nil
}

func readFixture(name string, out any) error {
	b, err := os.ReadFile(filepath.Join("internal", "nomadtest", "testdata", "nomad-2.0.5", name))
	if err != nil {
		return fmt.Errorf("run from the repository root: %w", err)
	}
	return json.Unmarshal(b, out)
}

// benchJob is Nomad 2.0.5's web job (the recorded answer, a few KB, every
// field as Nomad encodes it) as id, its first group holding tasks docker
// tasks shaped like the recorded proxy task, the i-th running
// images[i % len(images)], its constrained group dropped.
func benchJob(id string, images []string, tasks int) map[string]any {
	job := nomadtest.Clone(webFixture)
	job["ID"], job["Name"] = id, id
	group := job["TaskGroups"].([]any)[0].(map[string]any)
	proto := group["Tasks"].([]any)[0].(map[string]any)
	var ts []any
	for i := range tasks {
		t := nomadtest.Clone(proto)
		t["Name"] = fmt.Sprintf("t%d", i)
		t["Config"] = map[string]any{"image": images[i%len(images)], "network_mode": "host"}
		ts = append(ts, t)
	}
	group["Tasks"] = ts
	job["TaskGroups"] = []any{group}
	return job
}

// webFixture is the recorded web job, read once by fakeNomad.
var webFixture map[string]any

func (e *env) nomadConfig(srvURL, extra string) string {
	return e.configText(nil, fmt.Sprintf("resync_interval = \"1h\"\nnomad {\n  address = %q\n  infra_image = \"\"\n}\n%s", srvURL, extra))
}

// discoveryLatency measures JobRegistered → the first registry request for
// the job's new image, with discovery (the Job event stream), against the
// baseline of an agent that learns the jobs by polling them every -poll and
// rendering its config (a resync-only approach; its wait is half the
// interval on average).
func discoveryLatency(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	refs, err := e.seed(ctx, "disc", o.samples+o.pollSamples, 64<<10, 128<<10, false)
	if err != nil {
		return err
	}
	srv, err := e.fakeNomad(100)
	if err != nil {
		return err
	}
	defer srv.Close()
	a, cfg, _, err := e.startAgentWith(ctx, "disc", e.nomadConfig(srv.URL, ""))
	if err != nil {
		return err
	}
	first, err := e.sampleJobUpdates(ctx, srv, "discovery", refs[:o.samples])
	a.stop()
	if err != nil {
		return err
	}

	// The baseline: the same update, seen by polling the jobs.
	polled, err := e.pollBaseline(ctx, srv, refs[o.samples:], filepath.Dir(cfg))
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "\n### 5. Job update to first registry request (discovery)\n\n")
	fmt.Fprintf(out, "`prefetch run` with a nomad block following the fake Nomad agent of internal/nomadtest (Nomad 2.0.5's answers and event framing); "+
		"each sample registers a new version of one job whose only docker task names a new image (64 to 128 KiB, only in the registry); "+
		"the clock starts just before the registration (the fake publishes the JobRegistered event then) and stops when the first request naming the image's "+
		"repository reaches the proxy in front of the registry. Baseline, same run: an agent without discovery whose config is rendered from the jobs "+
		"every %s (a poller listing /v1/jobs and /v1/job/:id, as a resync-only agent or a cron would), %d samples. Percentiles are nearest-rank.\n\n",
		o.poll, len(polled))
	fmt.Fprintf(out, "| | samples | p50 | p95 | max | min |\n| --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(out, "| discovery (Job events) | %d | %s | %s | %s | %s |\n", len(first), ms(pct(first, 50)), ms(pct(first, 95)), ms(pct(first, 100)), ms(pct(first, 0)))
	fmt.Fprintf(out, "| baseline: polled every %s | %d | %s | %s | %s | %s |\n", o.poll, len(polled), ms(pct(polled, 50)), ms(pct(polled, 95)), ms(pct(polled, 100)), ms(pct(polled, 0)))
	fmt.Fprintf(out, "\nGoal: p50 < 250 ms and p95 < 1 s: %s (p50 %s, p95 %s). A poller's wait grows with its interval: at resync_interval's default (10m) it is 5 min on average.\n",
		verdict(pct(first, 50) < 250*time.Millisecond && pct(first, 95) < time.Second), ms(pct(first, 50)), ms(pct(first, 95)))
	return nil
}

// sampleJobUpdates registers, for each of refs in turn, a new version of
// the job "web" naming it, and returns how long each took to reach the
// registry (timeFirstRequest).
func (e *env) sampleJobUpdates(ctx context.Context, srv *nomadtest.Server, what string, refs []string) ([]time.Duration, error) {
	var ds []time.Duration
	for i, ref := range refs {
		d, err := e.timeFirstRequest(ctx, ref, func() { srv.RegisterJob(benchJob("web", []string{ref}, 1)) })
		if err != nil {
			return nil, fmt.Errorf("%s sample %d: %w", what, i+1, err)
		}
		ds = append(ds, d)
		progress("%s sample %d: first request %s", what, i+1, ms(d))
		time.Sleep(300 * time.Millisecond)
	}
	return ds, nil
}

// timeFirstRequest runs act and returns how long until the registry saw the
// first request for ref's repository.
func (e *env) timeFirstRequest(ctx context.Context, ref string, act func()) (time.Duration, error) {
	repo := strings.TrimPrefix(ref[:strings.LastIndexByte(ref, ':')], e.front.Addr+"/")
	seen := e.front.watch(repo)
	t0 := time.Now()
	act()
	select {
	case t := <-seen:
		return t.Sub(t0), nil
	case <-time.After(2*e.o.poll + 15*time.Second):
		return 0, fmt.Errorf("no registry request for %s", repo)
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
}

// pollBaseline runs an agent without discovery and a poller rendering its
// config from the fake's jobs every o.poll, and times each update.
func (e *env) pollBaseline(ctx context.Context, srv *nomadtest.Server, refs []string, dir string) ([]time.Duration, error) {
	cfg := filepath.Join(dir, "polled.hcl")
	render := func(images []string) error {
		tmp := cfg + ".tmp"
		if err := os.WriteFile(tmp, []byte(e.configText(images, "resync_interval = \"1h\"\nallow_empty = true\n")), 0o644); err != nil {
			return err
		}
		return os.Rename(tmp, cfg)
	}
	if err := render(nil); err != nil {
		return nil, err
	}
	a, _, err := e.startAgent(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer a.stop()
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		t := time.NewTicker(e.o.poll)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			if images, err := jobImages(pctx, srv.URL); err == nil {
				_ = render(images)
			}
		}
	}()
	var polled []time.Duration
	for i, ref := range refs {
		// Registered at a random point of the poll interval, as updates come.
		time.Sleep(time.Duration(rand.Float64() * float64(e.o.poll)))
		d, err := e.timeFirstRequest(ctx, ref, func() { srv.RegisterJob(benchJob("web", []string{ref}, 1)) })
		if err != nil {
			return nil, fmt.Errorf("baseline sample %d: %w", i+1, err)
		}
		polled = append(polled, d)
		progress("baseline sample %d: first request %s", i+1, ms(d))
	}
	return polled, nil
}

// jobImages is the poller: the images of every job, from the API.
func jobImages(ctx context.Context, base string) ([]string, error) {
	get := func(path string, out any) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(out)
	}
	var stubs []struct{ ID, Namespace string }
	if err := get("/v1/jobs?namespace=*", &stubs); err != nil {
		return nil, err
	}
	var images []string
	for _, s := range stubs {
		var job struct {
			TaskGroups []struct {
				Tasks []struct{ Config map[string]any }
			}
		}
		if err := get("/v1/job/"+s.ID+"?namespace="+s.Namespace, &job); err != nil {
			return nil, err
		}
		for _, g := range job.TaskGroups {
			for _, t := range g.Tasks {
				if img, ok := t.Config["image"].(string); ok {
					images = append(images, img)
				}
			}
		}
	}
	return images, nil
}

// follow measures an agent following a cluster of o.jobs jobs of o.tasks
// docker tasks each while the jobs are updated o.rate times a second: its
// RSS and CPU, and how far behind Nomad's index it falls.
func follow(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	images, err := e.seed(ctx, "follow", 20, 16<<10, 32<<10, false)
	if err != nil {
		return err
	}
	srv, err := e.fakeNomad(1000)
	if err != nil {
		return err
	}
	defer srv.Close()
	start := time.Now()
	for i := range o.jobs {
		srv.RegisterJob(benchJob(fmt.Sprintf("job-%04d", i), rotate(images, i), o.tasks))
	}
	progress("registered %d jobs of %d tasks (%s)", o.jobs, o.tasks, time.Since(start).Round(time.Millisecond))
	a, _, ready, err := e.startAgentWith(ctx, "follow", e.nomadConfig(srv.URL, ""))
	if err != nil {
		return err
	}
	defer a.stop()
	pid := a.cmd.Process.Pid
	_, _, ticks0, err := procSample(pid)
	if err != nil {
		return err
	}

	var maxRSS, maxLag int
	var lagSum, lagN int
	stop := time.After(o.followFor)
	tick := time.NewTicker(time.Second / time.Duration(max(o.rate, 1)))
	defer tick.Stop()
	sample := time.NewTicker(time.Second)
	defer sample.Stop()
	updates, last := 0, uint64(0)
loop:
	for {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-stop:
			break loop
		case <-tick.C:
			i := rand.IntN(o.jobs)
			last = srv.RegisterJob(benchJob(fmt.Sprintf("job-%04d", i), rotate(images, i+updates), o.tasks))
			updates++
		case <-sample.C:
			rss, _, _, err := procSample(pid)
			if err != nil {
				return err
			}
			maxRSS = max(maxRSS, rss)
			if idx, ok := agentIndex(a.listen); ok && last > idx {
				lag := int(last - idx)
				maxLag = max(maxLag, lag)
				lagSum += lag
				lagN++
			}
		}
	}
	rss, hwm, ticks1, err := procSample(pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n### 6. Following a cluster (discovery)\n\n")
	fmt.Fprintf(out, "The fake Nomad agent holds %d jobs of %d docker tasks each (%d task images, %d distinct, present after the start); `prefetch run` with a nomad block lists them (ready after %s), "+
		"then follows the Job events while the bench re-registers a random job up to %d times a second for %s (%d updates; each JobRegistered event carries the whole job, %d bytes, shaped like Nomad 2.0.5's); "+
		"VmRSS sampled every second from /proc, the agent's applied index read from /v1/status every second.\n\n",
		o.jobs, o.tasks, o.jobs*o.tasks, len(images), ready.Round(time.Millisecond), o.rate, o.followFor, updates, jobSize(images, o.tasks))
	fmt.Fprintf(out, "| | value |\n| --- | --- |\n")
	fmt.Fprintf(out, "| VmRSS max over the window / at the end | %s / %s |\n", mib(maxRSS), mib(rss))
	fmt.Fprintf(out, "| VmHWM (peak since start, the initial list included) | %s |\n", mib(hwm))
	fmt.Fprintf(out, "| CPU over the window | %d ticks = %.0f ms (%.1f%% of one core) |\n", ticks1-ticks0, float64(ticks1-ticks0)*10, float64(ticks1-ticks0)*10/o.followFor.Seconds()/10)
	fmt.Fprintf(out, "| indexes behind Nomad, sampled each second: mean / max | %.1f / %d |\n", float64(lagSum)/float64(max(lagN, 1)), maxLag)
	fmt.Fprintf(out, "\nGoals: RSS ≤ 64 MiB: %s (max %s); the backlog never grows: %s (at most %d indexes behind).\n",
		verdict(maxRSS <= 64*1024 && hwm <= 64*1024), mib(max(maxRSS, hwm)), verdict(maxLag <= 2*o.rate), maxLag)
	return nil
}

func rotate(images []string, i int) []string {
	n := i % len(images)
	return append(images[n:len(images):len(images)], images[:n]...)
}

func jobSize(images []string, tasks int) int {
	b, _ := json.Marshal(benchJob("job-0000", images, tasks))
	return len(b)
}

// agentIndex is the Nomad index the agent at listen last applied.
func agentIndex(listen string) (uint64, bool) {
	s, ok := agentStatus(listen)
	if !ok {
		return 0, false
	}
	return s.Nomad.Index, true
}

// agentStatus reads the /v1/status of the agent at listen, with discovery
// on (a status without a nomad part is not ok).
func agentStatus(listen string) (agent.Snapshot, bool) {
	resp, err := (&http.Client{Timeout: time.Second}).Get("http://" + listen + "/v1/status")
	if err != nil {
		return agent.Snapshot{}, false
	}
	defer resp.Body.Close()
	var s agent.Snapshot
	if json.NewDecoder(resp.Body).Decode(&s) != nil || s.Nomad == nil {
		return agent.Snapshot{}, false
	}
	return s, true
}
