package agent

// The schedule: which images start fetching when, within the budgets.

import (
	"context"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"log/slog"
	"slices"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// startDue starts fetches for entries that are due, the longest due first
// (an image Docker just removed is due at the zero time), while fewer than
// concurrency run. While images of more than one registry are waiting, no
// registry may hold every slot: one that hangs then delays only its own
// images, never the others'.
//
// Foreground first (foreground.go): an image a task starting on this node
// waits for goes before every other; the others (background work) run at
// most backgroundBudget at once, and none starts while the loop yields.
func (r *loopRun) startDue(ctx context.Context, now time.Time) {
	if !r.contacted || r.running >= r.cfg.Concurrency {
		return
	}
	var due []*entry
	inFlight := map[string]int{}
	background := 0
	waiting := r.waitingImages()
	for _, key := range r.order {
		e := r.entries[key]
		switch {
		case e.phase == phasePulling:
			inFlight[e.host]++
			if !e.fg {
				background++
			}
		case !e.due.After(now):
			due = append(due, e)
		}
	}
	slices.SortStableFunc(due, func(a, b *entry) int {
		if fa, fb := waiting[a.img.Expected], waiting[b.img.Expected]; fa != fb {
			if fa {
				return -1
			}
			return 1
		}
		return a.due.Compare(b.due)
	})
	budget := r.backgroundBudget()
	hosts := map[string]int{} // hosts with images waiting for a slot
	for _, e := range due {
		hosts[e.host]++
	}
	perHost := max(r.cfg.Concurrency-1, 1)
	for _, e := range due {
		if r.running >= r.cfg.Concurrency {
			return
		}
		host := e.host
		if inFlight[host] >= perHost && len(hosts) > 1 {
			continue
		}
		fg := waiting[e.img.Expected]
		if !fg && (r.yielding || background >= budget) {
			continue
		}
		if hosts[host]--; hosts[host] == 0 {
			delete(hosts, host)
		}
		inFlight[host]++
		if !fg {
			background++
		}
		r.start(ctx, e)
		e.fg = fg
	}
}

// hostOf is the registry host of a normalised reference, for grouping.
func hostOf(ref string) string {
	host, err := registry.Host(ref)
	if err != nil {
		return ref
	}
	return host
}

func (r *loopRun) start(ctx context.Context, e *entry) {
	fctx, cancel := context.WithCancel(ctx)
	e.cancel = cancel
	e.phase = phasePulling
	r.running++
	f := &Fetcher{
		Docker: r.loop.Docker, Remote: r.loop.Remote,
		PullTimeout: r.cfg.PullTimeout, StallTimeout: r.cfg.StallTimeout,
		Log: r.loop.Log, FallbackLevel: slog.LevelDebug, sh: r.loop.shared, Bundles: r.loop.Bundles,
	}
	if n := r.cfg.Nomad; n != nil && n.Peers != nil && r.loop.Peers != nil {
		f.Peers, f.PeersFirst = r.loop.Peers, n.Peers.Order == config.PeersFirst
	}
	key, img, gen := e.img.Expected, e.img, e.gen
	r.wg.Go(func() {
		defer cancel()
		r.done <- fetchDone{key: key, gen: gen, result: f.Fetch(fctx, img)}
	})
}

// nextDue returns how long until the earliest idle entry is due later than
// now. Entries already due and not started wait for a fetch to finish (which
// wakes the loop), not for a timer that would fire at once and spin.
func (r *loopRun) nextDue(now time.Time) time.Duration {
	wait := time.Hour
	for _, e := range r.entries {
		if e.phase != phasePulling && e.due.After(now) {
			wait = min(wait, e.due.Sub(now))
		}
	}
	return wait
}
