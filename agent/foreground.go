package agent

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// Foreground is what a ForegroundWatcher found on this node: the images
// that tasks starting here need and that are not present, which Nomad is
// pulling or is about to pull.
type Foreground struct {
	// Waiting are those images' normalised references, sorted.
	Waiting []string
	// WaitedBy says, per image of Waiting, which tasks wait for it
	// (namespace/job/group/task), at most a few each.
	WaitedBy map[string][]string
	// Live is true while this node's allocations are followed; Error is
	// why they can't be, since ErrorSince (Waiting is then empty: an agent
	// that can't see Nomad does not hold its own work back for it).
	Live       bool
	Error      string
	ErrorSince *time.Time
	// Index is the last allocations index read.
	Index uint64
	// GaveUp are images a task has been waiting for longer than the
	// watcher's bound: no longer yielded to (a task that can never pull
	// must not stop the agent's work for good), at most a few dozen.
	GaveUp []string
}

// ForegroundWatcher follows the allocations of this node. Run runs until
// ctx is done with the nomad block's settings, calling found with every
// new Foreground (found never blocks).
type ForegroundWatcher interface {
	Run(ctx context.Context, settings config.Nomad, found func(Foreground))
}

// ForegroundStatus is how yielding to Nomad goes, for /v1/status (the
// snapshot's "foreground") and the metrics.
type ForegroundStatus struct {
	// Yield and BackgroundPulls are the nomad block's settings.
	Yield           string `json:"yield"`
	BackgroundPulls int    `json:"background_pulls"`
	// Yielding is true while the agent holds its background pulls back
	// for Nomad's, since YieldingSince; Why says for which images.
	Yielding      bool       `json:"yielding"`
	YieldingSince *time.Time `json:"yielding_since,omitempty"`
	Why           string     `json:"why,omitempty"`
	// Waiting are the images tasks starting here wait for, not present;
	// WaitedBy who waits for each.
	Waiting  []string            `json:"waiting,omitempty"`
	WaitedBy map[string][]string `json:"waited_by,omitempty"`
	// Episodes counts the times yielding began; Cancelled the background
	// pulls cancelled for it (each retried when the episode ends).
	Episodes  uint64 `json:"episodes"`
	Cancelled uint64 `json:"cancelled"`
	// Live, Error, ErrorSince: whether this node's allocations are
	// followed.
	Live       bool       `json:"live"`
	Error      string     `json:"error,omitempty"`
	ErrorSince *time.Time `json:"error_since,omitempty"`
	GaveUp     []string   `json:"gave_up,omitempty"`
}

// Foreground first, the rule (docs/operating.md, "Foreground first"): while the config
// has a nomad block and a task starting on this node waits for an image
// that is not present (Nomad is, or is about to be, pulling it), the loop
// yields: it starts no fetch of an image no starting task waits for, and
// with yield = "cancel" cancels those in flight (each is due again when the
// episode ends, nothing counted as a failure); with "pause" it lets them
// finish. A fetch of an image a task waits for goes first, and is due at
// once when the task starts waiting. Outside an episode, background fetches
// run at most background_pulls at once (at most concurrency), so that
// Docker's download slots, shared by every pull on the daemon, are left to
// Nomad's own pulls.

// watchForeground starts, restarts or stops the foreground watcher as the
// nomad block says.
func (r *loopRun) watchForeground(ctx context.Context, settings *config.Nomad, want config.Nomad) {
	if r.fgWant != nil && settings != nil && reflect.DeepEqual(*r.fgWant, want) {
		return
	}
	if r.stopFg != nil {
		r.stopFg()
		r.stopFg, r.fgWant = nil, nil
	}
	r.fg = Foreground{}
	if settings == nil || r.loop.Foreground == nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	r.stopFg, r.fgWant = cancel, &want
	r.fgFound = newLatest[Foreground]() // a stopped watcher's last word is dropped
	found := r.fgFound
	r.wg.Go(func() { r.loop.Foreground.Run(ctx, want, found.put) })
}

// foregroundSet applies what the watcher found: an image newly waited for
// is due now, and yielding starts or ends.
func (r *loopRun) foregroundSet(f Foreground, now time.Time) {
	before := map[string]bool{}
	for _, ref := range r.fg.Waiting {
		before[ref] = true
	}
	r.fg = f
	for _, ref := range f.Waiting {
		if e, ok := r.entries[ref]; ok && !before[ref] && !e.busy() {
			e.due, e.retrying = time.Time{}, false
		}
	}
	r.updateYield(now)
}

// waitingImages are the images tasks starting here wait for that the loop
// does not know present.
func (r *loopRun) waitingImages() map[string]bool {
	out := map[string]bool{}
	for _, ref := range r.fg.Waiting {
		if e, ok := r.entries[ref]; ok && e.imageID != "" && !e.removed {
			continue // fetched since: Nomad finds it
		}
		out[ref] = true
	}
	return out
}

func (r *loopRun) yieldMode() string {
	if r.cfg.Nomad == nil {
		return config.YieldOff
	}
	return cmp.Or(r.cfg.Nomad.Yield, config.YieldCancel)
}

// backgroundBudget is how many background fetches may run at once.
func (r *loopRun) backgroundBudget() int {
	if r.cfg.Nomad == nil {
		return r.cfg.Concurrency
	}
	return min(cmp.Or(r.cfg.Nomad.BackgroundPulls, config.DefaultBackgroundPulls), r.cfg.Concurrency)
}

// updateYield starts or ends a yielding episode as the waiting images and
// the yield setting say; each is logged once, at its start and its end.
func (r *loopRun) updateYield(now time.Time) {
	waiting := r.waitingImages()
	mode := r.yieldMode()
	yield := mode != config.YieldOff && len(waiting) > 0
	refs := slices.Sorted(maps.Keys(waiting))
	if yield {
		r.yieldWhy = yieldWhy(refs, r.fg.WaitedBy)
	}
	switch {
	case yield && !r.yielding:
		r.yielding, r.yieldSince, r.epCancelled = true, now, 0
		r.episodes++
		r.loop.Log.Info("yielding to Nomad: a task starting on this node waits for an image that is not present; background pulls held back",
			"yield", mode, "waiting", clipList(refs, 5), "images", len(refs), "why", r.yieldWhy)
	case !yield && r.yielding:
		r.yielding = false
		r.loop.Log.Info("yielding to Nomad ended: background pulls resume",
			"yielded_for", now.Sub(r.yieldSince).Round(time.Millisecond).String(), "cancelled", r.epCancelled)
		r.yieldWhy = ""
	}
	if !r.yielding || mode != config.YieldCancel {
		return
	}
	for _, e := range r.entries {
		if e.phase != phasePulling || e.yielded {
			continue
		}
		if waiting[e.img.Expected] {
			e.fg = true // now serves a starting task: kept
			continue
		}
		if !e.fg {
			e.cancel()
			e.yielded = true
			r.cancelled++
			r.epCancelled++
		}
	}
}

// yieldWhy says in a line which tasks wait for what, bounded.
func yieldWhy(refs []string, by map[string][]string) string {
	var parts []string
	for _, ref := range refs[:min(len(refs), 3)] {
		who := by[ref]
		if len(who) > 0 {
			parts = append(parts, fmt.Sprintf("%s waits for %s", who[0], ref))
		} else {
			parts = append(parts, "a starting task waits for "+ref)
		}
	}
	if len(refs) > 3 {
		parts = append(parts, fmt.Sprintf("and %d more", len(refs)-3))
	}
	return strings.Join(parts, "; ")
}

// clipList is at most n of refs, for a log line.
func clipList(refs []string, n int) []string {
	if len(refs) <= n {
		return refs
	}
	return append(slices.Clone(refs[:n]), fmt.Sprintf("... %d more", len(refs)-n))
}

func (r *loopRun) foregroundStatus() *ForegroundStatus {
	if r.cfg.Nomad == nil {
		return nil
	}
	st := &ForegroundStatus{
		Yield: r.yieldMode(), BackgroundPulls: r.backgroundBudget(),
		Yielding: r.yielding, Why: r.yieldWhy, Episodes: r.episodes, Cancelled: r.cancelled,
		Live: r.fg.Live, Error: r.fg.Error, ErrorSince: r.fg.ErrorSince, GaveUp: r.fg.GaveUp,
	}
	if r.yielding {
		t := r.yieldSince
		st.YieldingSince = &t
	}
	if waiting := r.waitingImages(); len(waiting) > 0 {
		st.Waiting = slices.Sorted(maps.Keys(waiting))
		st.WaitedBy = map[string][]string{}
		for _, ref := range st.Waiting {
			if who := r.fg.WaitedBy[ref]; len(who) > 0 {
				st.WaitedBy[ref] = who
			}
		}
	}
	return st
}
