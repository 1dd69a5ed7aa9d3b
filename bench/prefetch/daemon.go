package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// agentProc is a running `prefetch run`.
type agentProc struct {
	cmd    *exec.Cmd
	listen string
	done   chan struct{} // closed when it exited
	err    error         // why, once done is closed
}

// writeConfig writes text as the config of a measurement, config.hcl in
// its own directory name, and returns its path.
func (e *env) writeConfig(name, text string) (string, error) {
	dir := filepath.Join(e.dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "config.hcl")
	return cfg, os.WriteFile(cfg, []byte(text), 0o644)
}

// startAgentWith writes text as the config of measurement name
// (writeConfig) and starts an agent on it (startAgent); it returns the
// agent, the config's path and how long the start took.
func (e *env) startAgentWith(ctx context.Context, name, text string) (*agentProc, string, time.Duration, error) {
	cfg, err := e.writeConfig(name, text)
	if err != nil {
		return nil, "", 0, err
	}
	a, ready, err := e.startAgent(ctx, cfg)
	return a, cfg, ready, err
}

// startAgent starts prefetch run on cfg and waits until /readyz answers 200
// and no Docker API call has arrived for a second (the start reconcile is
// over). It returns how long that took.
func (e *env) startAgent(ctx context.Context, cfg string) (*agentProc, time.Duration, error) {
	return e.startAgentLock(ctx, cfg, filepath.Join(e.dir, "prefetch.lock"))
}

// startAgentLock is startAgent with its own lock file, for agents side by
// side.
func (e *env) startAgentLock(ctx context.Context, cfg, lock string) (*agentProc, time.Duration, error) {
	listen, err := testbed.UnusedAddr()
	if err != nil {
		return nil, 0, err
	}
	cmd := exec.Command(e.o.prefetch, "run", "-config", cfg, "-listen", listen,
		"-lock-file", lock, "-log-level", "info")
	cmd.Env = e.cmdEnv()
	cmd.Stdout, cmd.Stderr = e.log, e.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	a := &agentProc{cmd: cmd, listen: listen, done: make(chan struct{})}
	go func() { a.err = cmd.Wait(); close(a.done) }()
	hc := &http.Client{Timeout: 2 * time.Second}
	var ready time.Duration
	for {
		if ready == 0 {
			if resp, err := hc.Get("http://" + listen + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ready = time.Since(start)
				}
			}
		}
		if ready > 0 && e.docker.quietSince() > time.Second {
			return a, ready, nil
		}
		select {
		case <-a.done:
			return nil, 0, fmt.Errorf("prefetch run exited early: %v (its log: %s)", a.err, filepath.Join(e.dir, "prefetch.log"))
		case <-ctx.Done():
			a.stop()
			return nil, 0, context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Since(start) > 60*time.Second {
			a.stop()
			return nil, 0, errors.New("prefetch run did not converge within 60 s")
		}
	}
}

// stop sends SIGTERM and waits (SIGKILL after 10 s).
func (a *agentProc) stop() {
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
}

// procSample reads VmRSS, VmHWM (KiB) and utime+stime (clock ticks) of pid.
func procSample(pid int) (rssKiB, hwmKiB, ticks int, err error) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rssKiB, _ = strconv.Atoi(f[1])
		case "VmHWM:":
			hwmKiB, _ = strconv.Atoi(f[1])
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, 0, err
	}
	// Fields after the command name, which is in parentheses: state is
	// field 3, utime 14, stime 15.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return rssKiB, hwmKiB, ut + st, nil
}

func mib(kib int) string { return strconv.FormatFloat(float64(kib)/1024, 'f', 1, 64) + " MiB" }

// userHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ, 100 on
// Linux for every architecture's ABI).
const userHZ = 100

// idle: prefetch run converged on idleN present images, left alone.
func idle(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	refs, err := e.seed(ctx, "idle", o.idleN, 1<<20, 2<<20, true)
	if err != nil {
		return err
	}
	cfg, err := e.writeConfig("idle", e.configText(refs, "resync_interval = \"10m\"\n"))
	if err != nil {
		return err
	}
	e.resetCounts()
	a, ready, err := e.startAgent(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.stop()
	startReg, startAPI := e.regCounts(), e.docker.snapshot()
	pid := a.cmd.Process.Pid

	e.resetCounts()
	rss0, _, ticks0, err := procSample(pid)
	if err != nil {
		return err
	}
	progress("idle: prefetch run (pid %d) ready in %s; measuring for %s", pid, ms(ready), o.idleFor)
	start := time.Now()
	maxRSS, minRSS := rss0, rss0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Since(start) < o.idleFor {
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-a.done:
			return fmt.Errorf("prefetch run exited during the idle window: %v", a.err)
		case <-tick.C:
		}
		rss, _, _, err := procSample(pid)
		if err != nil {
			return err
		}
		maxRSS, minRSS = max(maxRSS, rss), min(minRSS, rss)
	}
	rss1, hwm, ticks1, err := procSample(pid)
	if err != nil {
		return err
	}
	window := time.Since(start)
	reg, api := e.regCounts(), e.docker.snapshot()
	cpu := time.Duration(ticks1-ticks0) * time.Second / userHZ

	fmt.Fprintf(out, "\n### 4. Idle agent\n\n")
	fmt.Fprintf(out, "`prefetch run -config config.hcl -listen 127.0.0.1:PORT -lock-file ...` (the built binary, status endpoints on) with %d present images "+
		"and `resync_interval = \"10m\"`; measured from /proc/PID once it had converged (/readyz 200 after %s, then 1 s without a Docker API call), "+
		"VmRSS sampled every second for %s.\n\n", len(refs), ms(ready), window.Round(time.Second))
	fmt.Fprintf(out, "| | value |\n| --- | --- |\n")
	fmt.Fprintf(out, "| VmRSS at the start of the window | %s |\n", mib(rss0))
	fmt.Fprintf(out, "| VmRSS min / max over the window | %s / %s |\n", mib(minRSS), mib(maxRSS))
	fmt.Fprintf(out, "| VmRSS at the end | %s |\n", mib(rss1))
	fmt.Fprintf(out, "| VmHWM (peak RSS since start, including the start reconcile) | %s |\n", mib(hwm))
	fmt.Fprintf(out, "| CPU (utime+stime) over the window | %d tick(s) = %s (%.3f%% of one core) |\n", ticks1-ticks0, ms(cpu), 100*cpu.Seconds()/window.Seconds())
	fmt.Fprintf(out, "| Docker API calls during the window | %d |\n", total(api))
	fmt.Fprintf(out, "| registry requests during the window | %d |\n", reg.total())
	fmt.Fprintf(out, "| start reconcile of the %d present images: Docker API calls | %d (%s) |\n", len(refs), total(startAPI), describe(startAPI))
	fmt.Fprintf(out, "| start reconcile: registry requests | %d: %d `HEAD manifest`, %d `GET manifest`, %d `GET blob`, %d other (`GET /v2/`) |\n",
		startReg.total(), startReg.headManifest, startReg.getManifest, startReg.getBlob, startReg.other)
	fmt.Fprintf(out, "\nGoals: RSS ≤ 25 MiB: %s (max %s); CPU ~0, no polling: %s (%s over %s; %d Docker API calls, %d registry requests).\n",
		verdict(maxRSS <= 25*1024), mib(maxRSS), verdict(total(api) == 0 && reg.total() == 0 && cpu < window/1000),
		ms(cpu), window.Round(time.Second), total(api), reg.total())
	return nil
}

// latency: prefetch run watching its config; each sample renames a new
// config (one more image) over it, consul-template style, and measures how
// long until the first registry request for that image reaches the proxy.
func latency(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	base, err := e.seed(ctx, "idle", o.idleN, 1<<20, 2<<20, true)
	if err != nil {
		return err
	}
	added, err := e.seed(ctx, "lat", o.samples, 128<<10, 256<<10, false)
	if err != nil {
		return err
	}
	a, cfg, _, err := e.startAgentWith(ctx, "lat", e.configText(base, ""))
	if err != nil {
		return err
	}
	defer a.stop()

	var first, present []time.Duration
	for i, ref := range added {
		text := e.configText(append(slices.Clone(base), added[:i+1]...), "")
		tmp, err := os.CreateTemp(filepath.Dir(cfg), "")
		if err != nil {
			return err
		}
		if _, err := tmp.WriteString(text); err != nil {
			return err
		}
		if err := tmp.Chmod(0o644); err != nil {
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		repo := strings.TrimPrefix(ref[:strings.LastIndexByte(ref, ':')], e.front.Addr+"/")
		seen := e.front.watch(repo)
		t0 := time.Now()
		if err := os.Rename(tmp.Name(), cfg); err != nil {
			return err
		}
		select {
		case t := <-seen:
			first = append(first, t.Sub(t0))
		case <-time.After(15 * time.Second):
			return fmt.Errorf("sample %d: no registry request for %s within 15 s of the rename", i+1, repo)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		for {
			if _, err := e.bed.Client.ImageInspect(ctx, ref); err == nil {
				present = append(present, time.Since(t0))
				break
			}
			if time.Since(t0) > 30*time.Second {
				return fmt.Errorf("sample %d: %s not present 30 s after the rename", i+1, ref)
			}
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(10 * time.Millisecond):
			}
		}
		progress("latency sample %d: first request %s, present %s", i+1, ms(first[i]), ms(present[i]))
		time.Sleep(500 * time.Millisecond) // well past the debounce window
	}

	fmt.Fprintf(out, "\n### 3. Config change to first registry request\n\n")
	fmt.Fprintf(out, "`prefetch run` converged on %d present images; each sample writes a new config with one more image (128 to 256 KiB, only in the registry) "+
		"to a temp file in the watched directory (create, write, chmod, close) and renames it over `config.hcl`, as consul-template does; "+
		"the clock starts just before `rename(2)` and stops when the first request naming the new repository reaches the proxy in front of the registry "+
		"(the same process measures both). %d samples, one every ≥ 0.5 s after the previous image is present. "+
		"Percentiles are nearest-rank.\n\n", len(base), len(first))
	fmt.Fprintf(out, "| | p50 | p90 | max | min |\n| --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(out, "| rename → first registry request for the image | %s | %s | %s | %s |\n", ms(pct(first, 50)), ms(pct(first, 90)), ms(pct(first, 100)), ms(pct(first, 0)))
	fmt.Fprintf(out, "| rename → image present locally (polled every 10 ms) | %s | %s | %s | %s |\n", ms(pct(present, 50)), ms(pct(present, 90)), ms(pct(present, 100)), ms(pct(present, 0)))
	fmt.Fprintf(out, "\nGoal: p50 < 500 ms including the 250 ms debounce: %s (p50 %s).\n", verdict(pct(first, 50) < 500*time.Millisecond), ms(pct(first, 50)))
	return nil
}

// pct is the nearest-rank percentile p (0: the minimum, 100: the maximum).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}
