// Package foreground watches this node's own allocations in Nomad and
// tells the agent's loop which images tasks starting here wait for: the
// images Nomad's docker driver is pulling, or is about to pull, at task
// start. The loop yields to those pulls (agent/foreground.go).
//
// It reads one thing, cheaply: a blocking query on this node's allocations
// (GET /v1/node/:id/allocations?index=N&wait=D), which Nomad wakes only
// when one of them changes (transcript G: 1.0 s after a job was placed
// here, and again when its task moved on after the pull); no cluster-wide
// stream. Every call has a deadline, failures are retried with capped
// backoff, and while Nomad can't be read no image is reported waiting: an
// agent that can't see Nomad does not hold its own work back for it.
//
// A task is starting when its allocation is desired to run and is pending
// or running, the task's state is missing or "pending", and it is a docker
// task that is not a poststop hook (which runs only when the allocation
// stops). Its image is the one its last "Driver" event names
// (Details.image, as Nomad interpolated it: "Downloading image"), else its
// config's image when it holds no ${...} interpolation, normalised as the
// config's expected references are. It waits when Docker says the image is
// not present. An image waited for longer than MaxWait (a task whose pull
// can never succeed restarts pending for as long as its job says) is no
// longer reported, and is listed in GaveUp instead.
//
// It imports agent (for the set it reports), backoff, config, discovery
// (the Nomad client the nomad block describes), nomad and registry, and
// must not be imported by them.
package foreground

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/discovery"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Nomad is what the watcher asks of Nomad. *Client implements it over the
// official client.
type Nomad interface {
	// SelfNode returns the ID of the node of the agent it talks to.
	SelfNode(ctx context.Context) (string, error)
	// NodeAllocations returns node's allocations and their index, blocking
	// up to wait while index is still the latest (index 0: at once).
	NodeAllocations(ctx context.Context, node string, index uint64, wait time.Duration) ([]*api.Allocation, uint64, error)
}

// Images says whether an image is present. *registry.Engine implements it.
type Images interface {
	// Inspect returns the local image ref names, or an error wrapping
	// registry.ErrNotFound.
	Inspect(ctx context.Context, ref string) (registry.Image, error)
}

var _ Images = (*registry.Engine)(nil)

// Bounds on what one answer can make the watcher do: any job submitter
// chooses what the allocations hold.
const (
	taskPending = "pending" // TaskState.State; the api package has no constant
	maxAllocs   = 1000      // allocations read of one answer
	maxImages   = 64        // images checked and reported
	maxWaitedBy = 5         // tasks named per image
	maxGaveUp   = 32
)

// Watcher follows this node's allocations; its zero value (with Images
// set) is ready to use.
type Watcher struct {
	Images Images
	Log    *slog.Logger
	// CallTimeout bounds each call beyond its blocking wait, and each
	// inspect (default 30 s).
	CallTimeout time.Duration
	// Wait is a blocking query's wait while nothing waits (default 5 min,
	// Nomad's own); Recheck the wait while an image is waited for, after
	// which presence is checked again even if no allocation changed
	// (default 2 s).
	Wait, Recheck time.Duration
	// MaxWait is how long an image may be waited for before it is no
	// longer yielded to (default 10 min, the default pull_timeout).
	MaxWait time.Duration
	// Retry is the backoff between failed calls (default 1 s to 1 min).
	Retry backoff.Policy
}

var _ agent.ForegroundWatcher = (*Watcher)(nil)

// Run follows the allocations of settings' node (node_id, else the node
// of the agent the nomad block names) until ctx is done.
func (w *Watcher) Run(ctx context.Context, settings config.Nomad, found func(agent.Foreground)) {
	c, err := discovery.NewClient(settings)
	if err != nil {
		w.log().Error("foreground: can't talk to Nomad; not yielding to its pulls", "error", err.Error())
		now := time.Now()
		found(agent.Foreground{Error: err.Error(), ErrorSince: &now})
		<-ctx.Done()
		return
	}
	w.Follow(ctx, &Client{C: c, Timeout: w.callTimeout()}, settings.NodeID, found)
}

func (w *Watcher) log() *slog.Logger {
	if w.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return w.Log
}

func (w *Watcher) callTimeout() time.Duration { return or(w.CallTimeout, 30*time.Second) }

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Follow is Run with n: it reports the first answer, then every change.
func (w *Watcher) Follow(ctx context.Context, n Nomad, node string, found func(agent.Foreground)) {
	log := w.log()
	retry := w.Retry
	if retry == (backoff.Policy{}) {
		retry = backoff.Policy{Min: time.Second, Max: time.Minute, Jitter: 0.2}
	}
	st := &tracker{firstSeen: map[string]time.Time{}}
	var last *agent.Foreground
	var index uint64
	var errSince time.Time
	failures := 0
	for ctx.Err() == nil {
		asked := time.Now()
		fg, next, err := w.once(ctx, n, &node, index, st, last)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if failures == 1 {
				errSince = time.Now()
				log.Warn("foreground: this node's allocations can't be read; not yielding to Nomad's pulls meanwhile", "error", err.Error())
			}
			since := errSince
			fg = agent.Foreground{Error: err.Error(), ErrorSince: &since, GaveUp: st.gaveUp}
			if last == nil || !same(*last, fg) {
				found(fg)
				last = &fg
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(retry.Delay(failures, rand.Float64())):
			}
			continue
		}
		if failures > 0 {
			log.Info("foreground: this node's allocations are read again", "failed_attempts", failures)
			failures = 0
		}
		// An index below the last (a restored or rebuilt state) starts the
		// blocking over rather than waiting for one Nomad never reaches.
		moved := next != index
		index = max(next, 1)
		if last == nil || !same(*last, fg) {
			found(fg)
			last = &fg
		}
		if !moved && time.Since(asked) < or(w.Recheck, 2*time.Second)/2 {
			// Answered at once with nothing new (a proxy that does not
			// block): no faster than a recheck.
			select {
			case <-ctx.Done():
				return
			case <-time.After(or(w.Recheck, 2*time.Second)):
			}
		}
	}
}

// once makes one blocking query and evaluates what it returned.
func (w *Watcher) once(ctx context.Context, n Nomad, node *string, index uint64, st *tracker, last *agent.Foreground) (agent.Foreground, uint64, error) {
	if *node == "" {
		id, err := n.SelfNode(ctx)
		if err != nil {
			return agent.Foreground{}, 0, err
		}
		*node = id
	}
	wait := or(w.Wait, 5*time.Minute)
	if last != nil && len(last.Waiting) > 0 {
		wait = or(w.Recheck, 2*time.Second)
	}
	allocs, next, err := n.NodeAllocations(ctx, *node, index, wait)
	if err != nil {
		return agent.Foreground{}, index, err
	}
	starting := Starting(allocs)
	fg := agent.Foreground{Live: true, Index: next, WaitedBy: map[string][]string{}}
	for _, ref := range sortedKeys(starting) {
		if len(fg.Waiting) == maxImages {
			break
		}
		ictx, cancel := context.WithTimeout(ctx, w.callTimeout())
		_, err := w.Images.Inspect(ictx, ref)
		cancel()
		if !errors.Is(err, registry.ErrNotFound) {
			continue // present, or Docker can't say: nothing to yield to
		}
		fg.Waiting = append(fg.Waiting, ref)
		fg.WaitedBy[ref] = starting[ref]
	}
	fg.Waiting = st.bound(fg.Waiting, time.Now(), or(w.MaxWait, 10*time.Minute), w.log())
	for ref := range fg.WaitedBy {
		if !slices.Contains(fg.Waiting, ref) {
			delete(fg.WaitedBy, ref)
		}
	}
	fg.GaveUp = st.gaveUp
	return fg, next, nil
}

// tracker remembers since when each image is waited for.
type tracker struct {
	firstSeen map[string]time.Time
	gaveUp    []string
}

// bound drops the images waited for longer than max, logging each once.
func (t *tracker) bound(waiting []string, now time.Time, max time.Duration, log *slog.Logger) []string {
	var out []string
	seen := map[string]bool{}
	for _, ref := range waiting {
		seen[ref] = true
		first, ok := t.firstSeen[ref]
		if !ok {
			t.firstSeen[ref] = now
			first = now
		}
		if now.Sub(first) > max {
			if !slices.Contains(t.gaveUp, ref) {
				log.Warn("foreground: a starting task has waited too long for an image; no longer yielding to its pull", "image", ref, "waited", now.Sub(first).Round(time.Second).String())
				if len(t.gaveUp) < maxGaveUp {
					t.gaveUp = append(t.gaveUp, ref)
				}
			}
			continue
		}
		out = append(out, ref)
	}
	for ref := range t.firstSeen {
		if !seen[ref] {
			delete(t.firstSeen, ref) // its task moved on: a later wait starts anew
			t.gaveUp = slices.DeleteFunc(t.gaveUp, func(s string) bool { return s == ref })
		}
	}
	return out
}

func same(a, b agent.Foreground) bool {
	return a.Live == b.Live && a.Error == b.Error && slices.Equal(a.Waiting, b.Waiting) && slices.Equal(a.GaveUp, b.GaveUp)
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Starting returns the images of the docker tasks starting in allocs (see
// the package doc), normalised, each with the tasks that need it
// (namespace/job/group/task).
func Starting(allocs []*api.Allocation) map[string][]string {
	out := map[string][]string{}
	for _, a := range allocs[:min(len(allocs), maxAllocs)] {
		if a == nil || a.Job == nil || a.DesiredStatus != api.AllocDesiredStatusRun ||
			(a.ClientStatus != api.AllocClientStatusPending && a.ClientStatus != api.AllocClientStatusRunning) {
			continue
		}
		g := a.Job.LookupTaskGroup(a.TaskGroup)
		if g == nil {
			continue
		}
		for _, t := range g.Tasks {
			if t == nil || t.Driver != "docker" || (t.Lifecycle != nil && t.Lifecycle.Hook == api.TaskLifecycleHookPoststop) {
				continue
			}
			ts := a.TaskStates[t.Name]
			if ts != nil && ts.State != taskPending {
				continue
			}
			ref := taskImage(t, ts)
			if ref == "" {
				continue
			}
			if len(out[ref]) < maxWaitedBy {
				out[ref] = append(out[ref], clip(fmt.Sprintf("%s/%s/%s/%s", a.Namespace, a.JobID, a.TaskGroup, t.Name)))
			}
			if len(out) >= maxImages {
				return out
			}
		}
	}
	return out
}

// taskImage is the image task t pulls, normalised, or "" when it can't be
// told (an interpolation before Nomad's Driver event names the image).
func taskImage(t *api.Task, ts *api.TaskState) string {
	img := ""
	if ts != nil {
		for _, ev := range ts.Events {
			if ev != nil && ev.Type == api.TaskDriverMessage && ev.Details["image"] != "" {
				img = ev.Details["image"]
			}
		}
	}
	if img == "" {
		img, _ = t.Config["image"].(string)
		if strings.Contains(img, "${") {
			return ""
		}
	}
	return normalize(img)
}

// normalize normalises ref as the config's expected references are, or
// returns "" when it is not a reference.
func normalize(ref string) string {
	if ref == "" || len(ref) > 1024 {
		return ""
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	if _, pinned := named.(reference.Digested); pinned {
		return named.String()
	}
	return reference.TagNameOnly(named).String()
}

func clip(s string) string {
	if len(s) <= 256 {
		return s
	}
	return strings.ToValidUTF8(s[:256], "") + "..."
}

// Client is Nomad over the official client, every call with a deadline.
type Client struct {
	C       *nomad.Client
	Timeout time.Duration // beyond a blocking query's wait
}

// SelfNode asks the agent which node it is.
func (c *Client) SelfNode(ctx context.Context) (string, error) {
	return discovery.AgentNode(ctx, c.C, c.Timeout)
}

// NodeAllocations is GET /v1/node/:id/allocations, blocking from index.
func (c *Client) NodeAllocations(ctx context.Context, node string, index uint64, wait time.Duration) ([]*api.Allocation, uint64, error) {
	// Nomad answers a blocking query up to wait/16 past the wait (its
	// jitter): the deadline leaves room for that and the call itself.
	ctx, cancel := context.WithTimeout(ctx, wait+wait/16+c.Timeout)
	defer cancel()
	allocs, meta, err := c.C.API().Nodes().Allocations(url.PathEscape(node), nomad.Query(ctx, &api.QueryOptions{WaitIndex: index, WaitTime: wait}))
	if err != nil {
		return nil, 0, fmt.Errorf("reading this node's allocations (%s): %w", node, nomad.Err(err))
	}
	return allocs, meta.LastIndex, nil
}
