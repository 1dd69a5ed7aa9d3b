// Command prefetch-bench measures the prefetch binary against a private
// dockerd and a docker-registry on 127.0.0.1 (internal/testbed), with
// internal/faultproxy in front of the registry counting requests and a
// counting proxy in front of dockerd's socket. It prints Markdown.
//
// Four measurements (-run picks some):
//
//	cold     prefetch once vs xargs -P C docker pull of N fresh images
//	warm     prefetch once vs xargs -P C docker pull on a converged node
//	latency  config rename → first registry request for the new image, prefetch run
//	idle     prefetch run converged on 20 present images: RSS and CPU over a window
//	discovery  JobRegistered → first registry request, with discovery and with a poller
//	relay      JobRegistered → first registry request, following the relay and Nomad directly
//	follow   prefetch run following 2,000 jobs × 5 tasks updated 100 times a second
//
// Run it through bench/prefetch.sh, which builds the prefetch binary. It
// needs root (dockerd does), docker.io and docker-registry. It stops by itself
// (-timeout), and on SIGINT/SIGTERM, and removes everything it started.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	registrytypes "github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"github.com/nomad-prefetch/nomad-prefetch/bench/internal/benchkit"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

type options struct {
	prefetch    string
	docker      string
	run         string
	coldN       int
	coldReps    int
	concurrency int
	warmN       int
	warmReps    int
	samples     int
	idleN       int
	idleFor     time.Duration
	timeout     time.Duration
	keep        bool
	// discovery, follow
	pollSamples int
	poll        time.Duration
	jobs, tasks int
	rate        int
	followFor   time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.prefetch, "prefetch", "", "the prefetch binary to measure (required; go build -o ... ./cmd/prefetch)")
	flag.StringVar(&o.docker, "docker", "docker", "the docker CLI for the baseline")
	flag.StringVar(&o.run, "run", "cold,warm,latency,idle", "measurements to run, comma-separated")
	flag.IntVar(&o.coldN, "cold-images", 24, "cold: images (1 to 4 MiB each, distinct)")
	flag.IntVar(&o.coldReps, "cold-reps", 6, "cold: repetitions of each tool, alternating which goes first")
	flag.IntVar(&o.concurrency, "c", 4, "cold, warm: concurrency of prefetch and of xargs -P")
	flag.IntVar(&o.warmN, "warm-images", 200, "warm: present images")
	flag.IntVar(&o.warmReps, "warm-reps", 3, "warm: repetitions of each tool, alternating")
	flag.IntVar(&o.samples, "samples", 25, "latency: renames measured; discovery, stage: samples")
	flag.IntVar(&o.idleN, "idle-images", 20, "idle, latency: present images in the agent's config")
	flag.DurationVar(&o.idleFor, "idle", 60*time.Second, "idle: the measuring window")
	flag.IntVar(&o.pollSamples, "poll-samples", 10, "discovery: baseline samples (each waits up to -poll)")
	flag.DurationVar(&o.poll, "poll", 5*time.Second, "discovery: the baseline's polling interval")
	flag.IntVar(&o.jobs, "jobs", 2000, "follow: jobs in the fake cluster")
	flag.IntVar(&o.tasks, "tasks", 5, "follow: docker tasks per job")
	flag.IntVar(&o.rate, "rate", 100, "follow: job updates a second")
	flag.DurationVar(&o.followFor, "follow", 60*time.Second, "follow: the measuring window")
	flag.DurationVar(&o.timeout, "timeout", 9*time.Minute, "stop everything after this long")
	flag.BoolVar(&o.keep, "keep-logs", false, "copy the prefetch logs to ./bench-prefetch-logs before cleaning up")
	flag.Parse()
	if o.prefetch == "" {
		fmt.Fprintln(os.Stderr, "prefetch-bench: -prefetch BINARY is required (use bench/prefetch.sh)")
		os.Exit(2)
	}
	benchkit.Main("prefetch-bench", o.timeout, func(ctx context.Context) error { return run(ctx, o, os.Stdout) })
}

// env is everything the measurements share.
type env struct {
	o      options
	bed    *testbed.Bed
	proxy  *faultproxy.Proxy
	front  *front
	docker *dockerCounter
	dir    string // configs, logs, the empty DOCKER_CONFIG
	log    io.Writer

	mu     sync.Mutex
	seeded map[string][]string // seedSet name → refs
}

var progress = benchkit.Progress

func run(ctx context.Context, o options, out io.Writer) error {
	bin, err := filepath.Abs(o.prefetch)
	if err != nil {
		return err
	}
	o.prefetch = bin
	if _, err := os.Stat(bin); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, m := range strings.Split(o.run, ",") {
		switch m = strings.TrimSpace(m); m {
		case "cold", "warm", "latency", "idle", "discovery", "follow", "stage", "relay":
			want[m] = true
		default:
			return fmt.Errorf("-run: unknown measurement %q (cold, warm, latency, idle, discovery, follow, stage, relay)", m)
		}
	}

	progress("starting dockerd and docker-registry")
	bed, err := testbed.Start()
	if err != nil {
		return err
	}
	e := &env{o: o, bed: bed, seeded: map[string][]string{}}
	defer func() {
		if e.front != nil {
			e.front.close()
		}
		if e.proxy != nil {
			e.proxy.Close()
		}
		if e.docker != nil {
			e.docker.close()
		}
		if o.keep {
			_ = exec.Command("cp", "-r", e.dir, "bench-prefetch-logs").Run()
		}
		if err := bed.Close(); err != nil {
			progress("stopping the test bed: %v", err)
		}
		progress("test bed stopped and removed")
	}()
	e.dir = filepath.Join(bed.Dir, "bench")
	if err := os.MkdirAll(filepath.Join(e.dir, "dockercfg"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.dir, "dockercfg", "config.json"), []byte("{}\n"), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(e.dir, "prefetch.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	e.log = logf

	reg, err := bed.StartRegistry("bench", testbed.RegistryOptions{})
	if err != nil {
		return err
	}
	if e.proxy, err = faultproxy.Start("http://" + reg.Addr); err != nil {
		return err
	}
	if e.front, err = startFront(e.proxy); err != nil {
		return err
	}
	if e.docker, err = startDockerCounter(filepath.Join(bed.Dir, "count.sock"), strings.TrimPrefix(bed.Host, "unix://")); err != nil {
		return err
	}

	fmt.Fprintln(out, machine(ctx, e))
	for _, m := range []struct {
		name string
		f    func(context.Context, *env, io.Writer) error
	}{{"cold", cold}, {"warm", warm}, {"latency", latency}, {"idle", idle}, {"discovery", discoveryLatency}, {"follow", follow}, {"stage", stagedLatency}, {"relay", relayLatency}} {
		if !want[m.name] {
			continue
		}
		if err := m.f(ctx, e, out); err != nil {
			if c := context.Cause(ctx); c != nil {
				err = fmt.Errorf("%w (%v)", err, c)
			}
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

// machine describes where the numbers come from.
func machine(ctx context.Context, e *env) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Run %s on %d cores (%s/%s), Linux %s, %s.\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, uname(), runtime.Version())
	if v, err := e.bed.Client.ServerVersion(ctx, client.ServerVersionOptions{}); err == nil {
		drv := ""
		if info, err := e.bed.Client.Info(ctx, client.InfoOptions{}); err == nil {
			drv = ", storage driver " + info.Info.Driver
		}
		fmt.Fprintf(&b, "dockerd %s (API %s%s); ", v.Version, v.APIVersion, drv)
	}
	if o, err := exec.Command(e.o.docker, "version", "--format", "{{.Client.Version}}").Output(); err == nil {
		fmt.Fprintf(&b, "docker CLI %s; ", strings.TrimSpace(string(o)))
	}
	if o, err := exec.Command("docker-registry", "--version").CombinedOutput(); err == nil {
		fmt.Fprintf(&b, "%s; ", strings.TrimSpace(string(o)))
	}
	fmt.Fprintf(&b, "Settings: `-run %s -c %d -cold-images %d -cold-reps %d -warm-images %d -warm-reps %d -samples %d -idle-images %d -idle %s`; ",
		e.o.run, e.o.concurrency, e.o.coldN, e.o.coldReps, e.o.warmN, e.o.warmReps, e.o.samples, e.o.idleN, e.o.idleFor)
	b.WriteString("every registry request passes internal/faultproxy, every Docker API call a counting proxy on a unix socket (both tools alike).\n")
	return b.String()
}

func uname() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var s []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

// seed makes n images bench/<prefix>-NNN:1 in the registry, sizes from
// minSize to maxSize spread evenly, each with distinct content. With keep,
// they stay present locally (a converged node); else only the registry
// has them. It returns their references, and makes them once per prefix.
func (e *env) seed(ctx context.Context, prefix string, n, minSize, maxSize int, keep bool) ([]string, error) {
	e.mu.Lock()
	if refs, ok := e.seeded[prefix]; ok {
		e.mu.Unlock()
		return refs, nil
	}
	e.mu.Unlock()
	start := time.Now()
	refs := make([]string, n)
	for i := range refs {
		refs[i] = fmt.Sprintf("%s/bench/%s-%03d:1", e.front.Addr, prefix, i+1)
	}
	errs := make([]error, n)
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, ref := range refs {
		size := minSize
		if n > 1 {
			size += (maxSize - minSize) * i / (n - 1)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			seed := fmt.Sprintf("%s-%d-%d", prefix, i, time.Now().UnixNano())
			if keep {
				if _, err := e.bed.Import(ctx, ref, seed, size); err != nil {
					errs[i] = err
					return
				}
				_, errs[i] = e.bed.Push(ctx, ref, registrytypes.AuthConfig{})
				return
			}
			_, _, errs[i] = e.bed.Seed(ctx, ref, seed, size)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil, context.Cause(ctx)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("seeding %s: %w", prefix, err)
	}
	progress("seeded %d %s images (%s)", n, prefix, time.Since(start).Round(time.Millisecond))
	e.mu.Lock()
	e.seeded[prefix] = refs
	e.mu.Unlock()
	return refs, nil
}

// configText is a prefetch config naming refs, with dockerd reached through
// the counting proxy; extra is inserted before the image blocks.
func (e *env) configText(refs []string, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "docker {\n  host = %q\n}\nconcurrency = %d\n%s", "unix://"+e.docker.Sock, e.o.concurrency, extra)
	for _, ref := range refs {
		fmt.Fprintf(&b, "image %q {\n  expected = %q\n}\n", label(ref), ref)
	}
	return b.String()
}

// label is the config label of a bench reference: "cold-001".
func label(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	name, _, _ = strings.Cut(name, ":")
	return name
}

// regCounts are the requests that reached the faultproxy.
type regCounts struct {
	headManifest, getManifest, getBlob, headBlob, other int
}

func (e *env) regCounts() regCounts {
	p := e.proxy
	return regCounts{
		headManifest: p.Count("HEAD manifest"),
		getManifest:  p.Count("GET manifest"),
		getBlob:      p.Count("GET blob"),
		headBlob:     p.Count("HEAD blob"),
		other:        p.Count("GET other") + p.Count("HEAD other"),
	}
}

func (r regCounts) total() int {
	return r.headManifest + r.getManifest + r.getBlob + r.headBlob + r.other
}

func (e *env) resetCounts() {
	e.proxy.ResetCounts()
	e.docker.reset()
}

// cmdEnv is the environment both tools run with: no Docker config of the
// user running the bench.
func (e *env) cmdEnv() []string {
	return append(os.Environ(), "DOCKER_CONFIG="+filepath.Join(e.dir, "dockercfg"), "DOCKER_HOST=unix://"+e.docker.Sock)
}

// runOnce runs prefetch once -json on cfg and returns the wall time and the
// results ("up to date", "pulled", ...) by count.
func (e *env) runOnce(ctx context.Context, cfg string) (time.Duration, map[string]int, error) {
	cmd := exec.CommandContext(ctx, e.o.prefetch, "once", "-config", cfg, "-json")
	cmd.Env = e.cmdEnv()
	var stdout strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, e.log
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return wall, nil, fmt.Errorf("prefetch once: %w (its log: %s)", err, filepath.Join(e.dir, "prefetch.log"))
	}
	results := map[string]int{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), `"result": "`); ok {
			results[strings.TrimSuffix(v, `",`)]++
		}
	}
	return wall, results, nil
}

// baselineCmd is the shell baseline, as printed.
func (e *env) baselineCmd(list string) string {
	return fmt.Sprintf("xargs -P %d -n 1 %s pull -q < %s > /dev/null", e.o.concurrency, e.o.docker, list)
}

// runBaseline pulls every reference in list with xargs -P C docker pull.
func (e *env) runBaseline(ctx context.Context, list string) (time.Duration, error) {
	cmd := exec.CommandContext(ctx, "sh", "-c", e.baselineCmd(list))
	cmd.Env = e.cmdEnv()
	cmd.Stderr = e.log
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	if err != nil {
		return wall, fmt.Errorf("%s: %w", e.baselineCmd(list), err)
	}
	return wall, nil
}

func writeList(path string, refs []string) error {
	return os.WriteFile(path, []byte(strings.Join(refs, "\n")+"\n"), 0o644)
}

func itoa(n int) string { return strconv.Itoa(n) }

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 0, 64) + " ms"
}

func secs(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s"
}

// per formats n/d with two decimals.
func per(n, d int) string {
	if d == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/float64(d), 'f', 2, 64)
}
