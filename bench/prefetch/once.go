package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// oneRun is one timed run of one tool.
type oneRun struct {
	tool    string // "prefetch" or "docker"
	rep     int
	first   bool
	wall    time.Duration
	reg     regCounts
	api     map[string]int
	results map[string]int // prefetch's results by outcome
}

const (
	toolPrefetch = "prefetch"
	toolDocker   = "docker"
)

// alternate runs each tool reps times, prefetch first in even repetitions and
// docker first in odd ones, calling before ahead of every run.
func (e *env) alternate(ctx context.Context, reps int, cfg, list string, before func() error) ([]oneRun, error) {
	var runs []oneRun
	for rep := range reps {
		order := []string{toolPrefetch, toolDocker}
		if rep%2 == 1 {
			order = []string{toolDocker, toolPrefetch}
		}
		for i, tool := range order {
			if err := before(); err != nil {
				return nil, err
			}
			e.resetCounts()
			r := oneRun{tool: tool, rep: rep + 1, first: i == 0}
			var err error
			if tool == toolPrefetch {
				r.wall, r.results, err = e.runOnce(ctx, cfg)
			} else {
				r.wall, err = e.runBaseline(ctx, list)
			}
			if err != nil {
				return nil, err
			}
			r.reg, r.api = e.regCounts(), e.docker.snapshot()
			progress("rep %d %-8s %s  registry %+v  docker API %d", r.rep, tool, secs(r.wall), r.reg, total(r.api))
			runs = append(runs, r)
		}
	}
	return runs, nil
}

func byTool(runs []oneRun, tool string) []oneRun {
	return slices.DeleteFunc(slices.Clone(runs), func(r oneRun) bool { return r.tool != tool })
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func walls(runs []oneRun) []time.Duration {
	var out []time.Duration
	for _, r := range runs {
		out = append(out, r.wall)
	}
	return out
}

// span renders the values f takes over runs: "24", or "24–26" when they vary.
func span(runs []oneRun, f func(oneRun) int) string {
	lo, hi := f(runs[0]), f(runs[0])
	for _, r := range runs[1:] {
		lo, hi = min(lo, f(r)), max(hi, f(r))
	}
	if lo == hi {
		return itoa(lo)
	}
	return itoa(lo) + "–" + itoa(hi)
}

// spanPer is span divided by images.
func spanPer(runs []oneRun, images int, f func(oneRun) int) string {
	lo, hi := f(runs[0]), f(runs[0])
	for _, r := range runs[1:] {
		lo, hi = min(lo, f(r)), max(hi, f(r))
	}
	if lo == hi {
		return per(lo, images)
	}
	return per(lo, images) + "–" + per(hi, images)
}

func apiCount(key string) func(oneRun) int {
	return func(r oneRun) int { return r.api[key] }
}

// countsTable prints the request counts of both tools, per run and per image.
func countsTable(out io.Writer, runs []oneRun, images int) {
	p, d := byTool(runs, toolPrefetch), byTool(runs, toolDocker)
	rows := []struct {
		name string
		f    func(oneRun) int
	}{
		{"registry `HEAD manifest`", func(r oneRun) int { return r.reg.headManifest }},
		{"registry `GET manifest`", func(r oneRun) int { return r.reg.getManifest }},
		{"registry `GET blob` (layers and configs downloaded)", func(r oneRun) int { return r.reg.getBlob }},
		{"registry `HEAD blob`", func(r oneRun) int { return r.reg.headBlob }},
		{"registry other (`GET /v2/` pings)", func(r oneRun) int { return r.reg.other }},
		{"registry requests, all", func(r oneRun) int { return r.reg.total() }},
		{"Docker API `POST /images/create` (pulls)", apiCount("POST /images/create")},
		{"Docker API calls, all", func(r oneRun) int { return total(r.api) }},
	}
	fmt.Fprintf(out, "| per run (per image) | prefetch once | xargs docker pull |\n| --- | --- | --- |\n")
	for _, row := range rows {
		fmt.Fprintf(out, "| %s | %s (%s) | %s (%s) |\n", row.name,
			span(p, row.f), spanPer(p, images, row.f), span(d, row.f), spanPer(d, images, row.f))
	}
	fmt.Fprintf(out, "\nDocker API calls of one run (the first of each tool): prefetch once: %s; xargs docker pull: %s.\n",
		describe(p[0].api), describe(d[0].api))
}

func (e *env) timesTable(out io.Writer, runs []oneRun) (prefetchMedian, dockerMedian time.Duration) {
	fmt.Fprintf(out, "| rep | first | prefetch once | xargs -P %d docker pull | ratio |\n| --- | --- | --- | --- | --- |\n", e.o.concurrency)
	for i := 0; i+1 < len(runs); i += 2 {
		a, b := runs[i], runs[i+1]
		if a.tool != toolPrefetch {
			a, b = b, a
		}
		first := toolPrefetch
		if !a.first {
			first = "docker"
		}
		fmt.Fprintf(out, "| %d | %s | %s | %s | %.3f |\n", a.rep, first, secs(a.wall), secs(b.wall), a.wall.Seconds()/b.wall.Seconds())
	}
	pm, dm := median(walls(byTool(runs, toolPrefetch))), median(walls(byTool(runs, toolDocker)))
	fmt.Fprintf(out, "| **median** | | **%s** | **%s** | **%.3f** |\n", secs(pm), secs(dm), pm.Seconds()/dm.Seconds())
	return pm, dm
}

// cold: N images only the registry has, pulled by each tool in turn, with
// the images removed before every run.
func cold(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	refs, err := e.seed(ctx, "cold", o.coldN, 1<<20, 4<<20, false)
	if err != nil {
		return err
	}
	cfg, list := filepath.Join(e.dir, "cold.hcl"), filepath.Join(e.dir, "cold.txt")
	if err := os.WriteFile(cfg, []byte(e.configText(refs, "")), 0o644); err != nil {
		return err
	}
	if err := writeList(list, refs); err != nil {
		return err
	}
	removeAll := func() error {
		if err := e.bed.Remove(ctx, refs...); err != nil {
			return err
		}
		have, err := e.bed.Images(ctx)
		if err != nil {
			return err
		}
		for _, ref := range refs {
			if _, ok := have[ref]; ok {
				return fmt.Errorf("%s still present after removal", ref)
			}
		}
		syscall.Sync() // the last run's writes do not slow the next one
		return nil
	}
	runs, err := e.alternate(ctx, o.coldReps, cfg, list, removeAll)
	if err != nil {
		return err
	}
	// Every run must have made every image present.
	for _, r := range byTool(runs, toolPrefetch) {
		if r.results["pulled"] != len(refs) {
			return fmt.Errorf("cold: prefetch once rep %d: results %v, want %d pulled", r.rep, r.results, len(refs))
		}
	}

	totalSize := 0
	for i := range refs {
		totalSize += 1<<20 + 3<<20*i/max(len(refs)-1, 1)
	}
	fmt.Fprintf(out, "\n### 1. Cold pull of %d images\n\n", len(refs))
	fmt.Fprintf(out, "%d images of 1 to 4 MiB (one layer each, distinct content, %d MiB in all before compression), only in the registry; "+
		"every image removed (`docker rmi -f`) and `sync` before every run; %d repetitions, alternating which tool goes first. "+
		"prefetch: `prefetch once -config cold.hcl -json` with `concurrency = %d`; baseline: `%s`.\n\n",
		len(refs), totalSize>>20, o.coldReps, o.concurrency, e.baselineCmd("cold.txt"))
	pm, dm := e.timesTable(out, runs)
	ratio := pm.Seconds() / dm.Seconds()
	verdict := "met"
	if ratio > 1.05 {
		verdict = "**missed**"
	}
	fmt.Fprintf(out, "\nGoal: prefetch ≤ 1.05 × the baseline: %s (median ratio %.3f).\n\n", verdict, ratio)
	countsTable(out, runs, len(refs))
	return nil
}

// warm: every image present and current; each tool checks all of them.
func warm(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	refs, err := e.seed(ctx, "warm", o.warmN, 64<<10, 256<<10, true)
	if err != nil {
		return err
	}
	cfg, list := filepath.Join(e.dir, "warm.hcl"), filepath.Join(e.dir, "warm.txt")
	if err := os.WriteFile(cfg, []byte(e.configText(refs, "")), 0o644); err != nil {
		return err
	}
	if err := writeList(list, refs); err != nil {
		return err
	}
	// Converge: a first pass of each, not measured.
	if _, res, err := e.runOnce(ctx, cfg); err != nil {
		return err
	} else if res["up to date"] != len(refs) {
		progress("warm: the converging pass of prefetch once had results %v", res)
	}
	if _, err := e.runBaseline(ctx, list); err != nil {
		return err
	}
	runs, err := e.alternate(ctx, o.warmReps, cfg, list, func() error { return nil })
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "\n### 2. Warm resync of %d present images\n\n", len(refs))
	fmt.Fprintf(out, "%d images (64 to 256 KiB), present locally and current (imported and pushed, then one unmeasured pass of each tool); "+
		"%d repetitions, alternating. prefetch: `prefetch once -config warm.hcl -json` with `concurrency = %d` "+
		"(per image what a daemon resync does: inspect, one manifest HEAD, no pull); baseline: `%s`.\n\n",
		len(refs), o.warmReps, o.concurrency, e.baselineCmd("warm.txt"))
	pm, _ := e.timesTable(out, runs)
	fmt.Fprintln(out)
	countsTable(out, runs, len(refs))
	p := byTool(runs, toolPrefetch)
	var pulls, blobs, worstPerTag int
	results := map[string]int{}
	for _, r := range p {
		pulls = max(pulls, r.api["POST /images/create"])
		blobs = max(blobs, r.reg.getBlob)
		worstPerTag = max(worstPerTag, r.reg.total())
		for k, v := range r.results {
			results[k] += v
		}
	}
	fmt.Fprintf(out, "\nprefetch's results over its %d runs: %s.\n\nGoals:\n", len(p), resultsText(results))
	fmt.Fprintf(out, "- 0 layers downloaded: %s (at most %d `GET blob` and %d pulls in a run).\n", verdict(blobs == 0), blobs, pulls)
	fmt.Fprintf(out, "- ≤ 1 registry request per tag (a manifest HEAD): %s (at most %s per tag).\n", verdict(worstPerTag <= len(refs)), per(worstPerTag, len(refs)))
	fmt.Fprintf(out, "- < 2 s: %s (median %s).\n", verdict(pm < 2*time.Second), secs(pm))
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func resultsText(m map[string]int) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
