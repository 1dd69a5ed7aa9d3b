package agent

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/outage"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// ImageEventer streams the daemon's image removals, and answers a ping.
// *registry.Engine implements it.
type ImageEventer interface {
	ImageEvents(ctx context.Context) (<-chan registry.ImageEvent, <-chan error, error)
	Ping(ctx context.Context) error
}

var _ ImageEventer = (*registry.Engine)(nil)

// AuthSetter takes the config's auth blocks each time a config is put in
// force. *registry.Credentials implements it.
type AuthSetter interface {
	SetAuths([]registry.Auth)
}

var _ AuthSetter = (*registry.Credentials)(nil)

// Loop keeps every image of the current config present: `prefetch run`.
//
// One loop owns all per-image state. It reconciles every image at start, an
// image again when its config entry changes, when its retry comes due
// (capped exponential backoff, honouring a registry's Retry-After), when its
// resync comes due (resync_interval plus up to 10% jitter), when Docker
// reports its image untagged or deleted (Nomad's image GC), and every image
// on SIGHUP or when the Docker daemon comes back. Fetches run on their own
// goroutines, at most concurrency at once, and report back to the loop; the
// loop itself never waits on Docker or a registry.
type Loop struct {
	Docker   Docker
	Events   ImageEventer
	Remote   Digester   // optional
	Auths    AuthSetter // optional: given the auth blocks of each config put in force
	Bundles  Bundles    // optional: serves the bundle: sources
	Observer Observer   // optional: told what happens, for the metrics
	// Discoverer, when set, is run while the config has a nomad block.
	Discoverer Discoverer
	// Foreground, when set, is run while the config has a nomad block: the
	// images tasks starting on this node wait for, which the loop yields
	// to (see startDue).
	Foreground ForegroundWatcher
	Log        *slog.Logger
	// EventRetry is the first wait before resubscribing to Docker's events
	// after the stream broke (doubling, capped at 30 s); default 1 s.
	EventRetry time.Duration
	// HealthInterval is how often the daemon is pinged while the event
	// subscription is up, so that a daemon that hangs with the stream open
	// is noticed; default 30 s.
	HealthInterval time.Duration

	snap   atomic.Pointer[Snapshot]
	ping   chan chan struct{}
	once   sync.Once
	shared *shared
}

func (l *Loop) init() {
	l.once.Do(func() {
		l.ping = make(chan chan struct{})
		l.snap.Store(&Snapshot{})
		l.shared = newShared()
	})
}

// Snapshot returns the state as of the loop's last change.
func (l *Loop) Snapshot() Snapshot {
	l.init()
	return *l.snap.Load()
}

// Alive reports whether the loop answers within two seconds.
func (l *Loop) Alive() bool {
	l.init()
	reply := make(chan struct{})
	timeout := time.NewTimer(2 * time.Second)
	defer timeout.Stop()
	select {
	case l.ping <- reply:
	case <-timeout.C:
		return false
	}
	select {
	case <-reply:
		return true
	case <-timeout.C:
		return false
	}
}

// entry is one image's state, owned by the loop.
type entry struct {
	img      config.Image
	host     string // the registry host of expected, which is tried first
	state    string
	imageID  string
	source   string
	result   Outcome
	lastErr  string
	due      time.Time // next check: a retry, a resync, or zero for now
	retrying bool      // due is a retry after a failure
	lastOK   time.Time
	cancel   context.CancelFunc // set while a fetch is in flight
	gen      uint64             // set anew when the entry changes, to drop stale results
	fails    outage.Log
	origin   string   // OriginConfig or OriginNomad
	usedBy   []string // the Nomad tasks naming it, when discovery knows
	// fg is set while the fetch in flight serves a task starting on this
	// node (its image is waited for); yielded when that fetch, a
	// background one, was cancelled to yield to Nomad's pulls.
	fg      bool
	yielded bool

	// Docker removals (Nomad's image GC): checking is set while an inspect
	// finds out whether a removal event took expected; recheck when another
	// event came while that or a fetch was in flight; removed from the
	// moment expected is known gone until it is back (a restore).
	checking bool
	recheck  bool
	removed  bool
}

func (e *entry) busy() bool { return e.cancel != nil || e.checking }

type fetchDone struct {
	key    string
	gen    uint64
	result Result
}

// checkDone is what an inspect after a removal event found.
type checkDone struct {
	key string
	gen uint64
	im  registry.Image
	err error
}

// dockerEvent is what the event watcher tells the loop about the daemon.
type dockerEvent struct {
	err error // set: the daemon is unreachable
	// resubscribed: the subscription was made again after it broke, and
	// what happened meanwhile is unknown. Neither: the daemon answered.
	resubscribed bool
}

type loopRun struct {
	loop    *Loop
	obs     Observer
	path    string
	cfg     config.Config
	src     []byte // the config file's content, to tell a real change
	loaded  time.Time
	cfgErr  string
	entries map[string]*entry
	order   []string // expected references in config order
	running int
	done    chan fetchDone
	checked chan checkDone
	stopped chan struct{}
	wg      sync.WaitGroup
	gen     uint64

	// Discovery: the settings it runs with (nil: off), how to stop it, the
	// sets it reports and the last one applied.
	discovering   *config.Nomad
	stopDiscovery context.CancelFunc
	found         *latest[Discovered]
	discovered    Discovered

	// Foreground first: the watcher's settings (nil: off), how to stop
	// it, what it reports, and the yielding episode under way.
	fgWant      *config.Nomad
	stopFg      context.CancelFunc
	fgFound     *latest[Foreground]
	fg          Foreground
	yielding    bool
	yieldSince  time.Time
	yieldWhy    string
	episodes    uint64
	cancelled   uint64
	epCancelled uint64

	dockerErr   string // why the Docker daemon is unreachable; "" when it answers
	dockerSince time.Time
	// contacted is set once the event watcher's first subscription has
	// answered or failed: fetches wait for it, so that the API version is
	// negotiated once (its ping) rather than by every first call at once.
	contacted bool
}

// Run reconciles until ctx is done, starting from cfg, parsed by the caller
// from src, the content of path: whatever changes path after src was read is
// a change, so the caller must start watching path before reading it.
// Each receive on changed reloads the file; each on hup reloads it and checks
// every image now. A config that fails to load is logged once, with every
// problem's file:line:col, and the last good one stays in force. Run returns
// nil after cancelling the fetches in flight and waiting for them.
func (l *Loop) Run(ctx context.Context, path string, src []byte, cfg config.Config, changed, hup <-chan struct{}) error {
	l.init()
	obs := l.Observer
	if obs == nil {
		obs = nopObserver{}
	}
	r := &loopRun{
		loop: l, obs: obs, path: path, src: src, entries: map[string]*entry{},
		done: make(chan fetchDone), checked: make(chan checkDone), stopped: make(chan struct{}),
		found: newLatest[Discovered](), fgFound: newLatest[Foreground](),
	}
	r.apply(ctx, cfg, time.Now())
	r.obs.Reloaded("ok", r.loaded)

	events := make(chan registry.ImageEvent)
	docker := make(chan dockerEvent)
	evCtx, stopEvents := context.WithCancel(ctx)
	var evWG sync.WaitGroup
	evWG.Go(func() { l.watchEvents(evCtx, events, docker) })
	defer func() {
		stopEvents()
		evWG.Wait()
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		r.startDue(ctx, now)
		r.publish()
		timer.Reset(r.nextDue(now))
		select {
		case <-ctx.Done():
			r.shutdown()
			return nil
		case res := <-r.done:
			r.finish(res, time.Now())
		case c := <-r.checked:
			r.finishCheck(ctx, c, time.Now())
		case <-r.found.notify:
			if d, ok := r.found.take(); ok {
				r.discoveredSet(d)
			}
		case <-r.fgFound.notify:
			if f, ok := r.fgFound.take(); ok {
				r.foregroundSet(f, time.Now())
			}
		case <-changed:
			r.reload(ctx, false)
		case <-hup:
			l.Log.Info("SIGHUP: reloading the config and checking every image")
			r.reload(ctx, true)
		case ev := <-events:
			r.imageEvent(ctx, ev)
		case ev := <-docker:
			r.contacted = true
			switch {
			case ev.err != nil:
				r.dockerDown(ev.err, time.Now())
			case ev.resubscribed:
				r.dockerBack()
			default:
				r.dockerUp(time.Now())
			}
		case reply := <-l.ping:
			close(reply)
		case <-timer.C:
		}
	}
}

// apply makes cfg the config in force: new entries are due now, removed
// ones stop (their fetch is cancelled; no image is ever deleted), changed
// ones start over.
func (r *loopRun) apply(ctx context.Context, cfg config.Config, now time.Time) (added, changed, removed int) {
	r.cfg, r.loaded, r.cfgErr = cfg, now, ""
	if r.loop.Auths != nil {
		r.loop.Auths.SetAuths(RegistryAuths(cfg.Auths))
	}
	for _, w := range cfg.Warnings {
		r.loop.Log.Warn("config: "+w.Msg, "at", w.Pos.String())
	}
	r.discover(ctx, cfg.Nomad)
	added, changed, removed = r.setImages()
	r.updateYield(now)
	return added, changed, removed
}

// setImages makes the config's images and the discovered ones (a config
// entry wins for the same expected reference) the images kept: new entries
// are due now, removed ones stop (their fetch is cancelled; no image is ever
// deleted), changed ones start over.
func (r *loopRun) setImages() (added, changed, removed int) {
	keep := map[string]bool{}
	r.order = r.order[:0]
	add := func(img config.Image, origin string) {
		if keep[img.Expected] {
			return
		}
		keep[img.Expected] = true
		r.order = append(r.order, img.Expected)
		e, ok := r.entries[img.Expected]
		switch {
		case !ok:
			r.gen++
			e = &entry{img: img, host: hostOf(img.Expected), state: StateWanted, gen: r.gen}
			r.entries[img.Expected] = e
			added++
		case !sameImage(e.img, img):
			if e.cancel != nil {
				e.cancel()
				e.cancel = nil
			}
			r.gen++
			*e = entry{img: img, host: e.host, state: StateWanted, imageID: e.imageID, source: e.source, gen: r.gen}
			changed++
		default:
			e.img = img // the name or position may have moved
		}
		e.origin, e.usedBy = origin, r.discovered.UsedBy[img.Expected]
	}
	for _, img := range r.cfg.Images {
		add(img, OriginConfig)
	}
	for _, img := range r.discovered.Images {
		add(img, OriginNomad)
	}
	for key, e := range r.entries {
		if !keep[key] {
			if e.cancel != nil {
				e.cancel()
			}
			delete(r.entries, key)
			removed++
		}
	}
	return added, changed, removed
}

func sameImage(a, b config.Image) bool {
	return a.Expected == b.Expected && a.Digest == b.Digest && a.Platform == b.Platform && slices.Equal(a.Sources, b.Sources)
}

// discover starts, restarts or stops discovery as the config's nomad block
// says; the images found are kept until another set replaces them, and
// dropped when the block is removed.
func (r *loopRun) discover(ctx context.Context, settings *config.Nomad) {
	var want config.Nomad
	if settings != nil {
		want = *settings
		want.Pos = config.Pos{}
		// The loop's own settings: a change to them restarts nothing.
		want.Yield, want.BackgroundPulls = "", 0
	}
	r.watchForeground(ctx, settings, want)
	if r.discovering != nil && settings != nil && reflect.DeepEqual(*r.discovering, want) {
		return
	}
	if r.stopDiscovery != nil {
		r.stopDiscovery()
		r.stopDiscovery, r.discovering = nil, nil
	}
	if settings == nil {
		r.discovered = Discovered{}
		return
	}
	if r.loop.Discoverer == nil {
		r.loop.Log.Warn("config: the nomad block is set but this agent cannot discover images from Nomad")
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	r.stopDiscovery, r.discovering = cancel, &want
	found := r.found
	r.wg.Go(func() { r.loop.Discoverer.Run(ctx, want, found.put) })
}

// discoveredSet makes d the discovered images.
func (r *loopRun) discoveredSet(d Discovered) {
	r.discovered = d
	added, changed, removed := r.setImages()
	r.updateYield(time.Now())
	if added+changed+removed > 0 {
		r.loop.Log.Info("images discovered from Nomad", "images", len(d.Images), "added", added, "changed", changed, "removed", removed, "index", d.Status.Index)
	}
}

func (r *loopRun) reload(ctx context.Context, all bool) {
	now := time.Now()
	src, err := config.ReadFile(r.path)
	var cfg config.Config
	if err == nil {
		cfg, err = config.Parse(r.path, src)
	}
	if err != nil {
		msg := err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			msg = fmt.Sprintf("config file %s is missing; keeping the last good config", r.path)
		}
		if msg != r.cfgErr {
			var errs config.Errors
			if errors.As(err, &errs) {
				r.loop.Log.Error("config not loaded; keeping the last good config", "file", r.path, "problems", len(errs), "error", msg)
			} else {
				r.loop.Log.Warn(msg, "file", r.path)
			}
		}
		r.cfgErr = msg
		r.obs.Reloaded("failed", now)
	} else if !all && bytes.Equal(src, r.src) && r.cfgErr == "" {
		r.obs.Reloaded("unchanged", now)
	} else {
		wasBroken := r.cfgErr != ""
		r.src = src
		added, changed, removed := r.apply(ctx, cfg, now)
		r.obs.Reloaded("ok", now)
		r.loop.Log.Info("config loaded", "file", r.path, "images", len(cfg.Images), "added", added, "changed", changed, "removed", removed, "recovered", wasBroken)
	}
	if all {
		for _, e := range r.entries {
			e.due, e.retrying = time.Time{}, false
		}
	}
}

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
		case e.cancel != nil:
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
	e.state = StatePulling
	r.running++
	f := &Fetcher{
		Docker: r.loop.Docker, Remote: r.loop.Remote,
		PullTimeout: r.cfg.PullTimeout, StallTimeout: r.cfg.StallTimeout,
		Log: r.loop.Log, FallbackLevel: slog.LevelDebug, sh: r.loop.shared, Bundles: r.loop.Bundles,
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
		if e.cancel == nil && e.due.After(now) {
			wait = min(wait, e.due.Sub(now))
		}
	}
	return wait
}

func (r *loopRun) finish(res fetchDone, now time.Time) {
	r.running--
	e, ok := r.entries[res.key]
	if !ok || e.gen != res.gen || e.cancel == nil {
		return // removed or changed while in flight: its result is moot
	}
	e.cancel = nil
	result := res.result
	log := r.loop.Log.With("image", e.img.Expected, "name", e.img.Name)
	yielded := e.yielded
	e.yielded, e.fg = false, false
	if yielded && (result.Outcome == Failed || result.Outcome == Stale) {
		// Cancelled to yield to Nomad: not a failure, nothing counted; due
		// again once the episode ends (which also answers a removal that
		// came meanwhile).
		e.state, e.due, e.recheck = StateWanted, time.Time{}, false
		if e.imageID != "" {
			e.state = StatePresent
		}
		log.Debug("background fetch cancelled while yielding to Nomad's pulls; retried after", "result", string(result.Outcome))
		return
	}
	if e.recheck {
		// Docker removed an image while this fetch ran: what it found may
		// be gone already. Start over, with nothing counted or logged.
		e.recheck, e.state, e.due = false, StateWanted, time.Time{}
		log.Debug("a Docker removal came during the fetch; checking again", "result", string(result.Outcome))
		return
	}
	from := "none"
	if result.OK() {
		from = "expected"
		if result.Source != "" {
			from = "source"
		}
	}
	r.obs.Fetched(string(result.Outcome), from, result.Duration)
	e.result = result.Outcome
	if result.Outcome == Failed || result.Outcome == Stale {
		r.failed(e, result, log, now)
	} else {
		r.succeeded(e, result, log, now)
		r.updateYield(now) // the image a task waited for may be here now
	}
}

// failed records a fetch that left e absent (Failed) or not refreshed
// (Stale), schedules its retry and logs it as the outage log decides.
func (r *loopRun) failed(e *entry, res Result, log *slog.Logger, now time.Time) {
	e.lastErr = res.Err.Error()
	e.state = StateFailed
	e.imageID = ""
	if res.Outcome == Stale {
		e.state, e.imageID = StatePresent, res.ImageID
	}
	delay := backoff.Policy{Min: r.cfg.RetryInitial, Max: r.cfg.RetryMax, Jitter: 0.2}.Delay(e.fails.Attempts()+1, rand.Float64())
	delay = max(delay, retryAfter(res.Err))
	e.due, e.retrying = now.Add(delay), true
	verdict := e.fails.Failed(now, e.lastErr, r.cfg.AlertAfter)
	level := slog.LevelDebug
	if verdict.Loud() {
		level = slog.LevelError
	}
	if registry.IsDaemonDown(res.Err) {
		// One line for the whole outage, not one per image.
		level = slog.LevelDebug
		r.dockerDown(res.Err, now)
	}
	if res.Outcome == Stale && level == slog.LevelError {
		level = slog.LevelWarn
	}
	msg := "image not available"
	if res.Outcome == Stale {
		msg = "image present but not refreshed"
	}
	attrs := []any{"why_logged", verdict.String(), "attempts", e.fails.Attempts(),
		"failing_for", now.Sub(e.fails.Since()).Round(time.Second).String(), "next_retry_in", delay.Round(time.Millisecond).String()}
	if e.removed {
		attrs = append(attrs, "removed_by_docker", true)
	}
	log.Log(context.Background(), level, msg, append(attrs, "error", e.lastErr)...)
}

// succeeded records a fetch that made e present and schedules its resync.
func (r *loopRun) succeeded(e *entry, res Result, log *slog.Logger, now time.Time) {
	r.dockerUp(now)
	e.state, e.imageID, e.source, e.lastErr, e.lastOK = StatePresent, res.ImageID, res.Source, "", now
	e.due = now.Add(r.cfg.ResyncInterval + time.Duration(rand.Float64()*0.1*float64(r.cfg.ResyncInterval)))
	e.retrying = false
	attrs := []any{"result", string(res.Outcome), "duration", res.Duration.Round(time.Millisecond).String(), "image_id", res.ImageID}
	if res.Source != "" {
		attrs = append(attrs, "source", res.Source)
	}
	attempts, downtime, recovered := e.fails.Recovered(now)
	if recovered {
		attrs = append(attrs, "failed_attempts", attempts, "downtime", downtime.Round(time.Second).String())
	}
	switch {
	case e.removed:
		e.removed = false
		log.Info("image restored after Docker removed it", attrs...)
	case recovered:
		log.Info("image recovered", attrs...)
	case res.Outcome == UpToDate:
		log.Debug("image ready", attrs...) // a resync that changed nothing
	default:
		log.Info("image ready", attrs...)
	}
}

// imageEvent handles a Docker untag or delete: every entry whose image has
// that ID, or whose expected reference the event names, is checked (an
// inspect, outside any fetch slot), unless a fetch or check is in flight,
// which then runs again when it ends.
func (r *loopRun) imageEvent(ctx context.Context, ev registry.ImageEvent) {
	for _, key := range r.order {
		e := r.entries[key]
		named := ev.Name == e.img.Expected
		if !named && (ev.ID == "" || ev.ID != e.imageID) {
			continue
		}
		r.loop.Log.Debug("Docker event about an image the node keeps", "image", e.img.Expected, "action", ev.Action, "image_id", ev.ID)
		switch {
		case e.busy():
			e.recheck = true
		case named:
			r.gone(e)
		default:
			r.check(ctx, e)
		}
	}
}

// check inspects e's expected reference and reports to the loop.
func (r *loopRun) check(ctx context.Context, e *entry) {
	e.checking = true
	key, gen := e.img.Expected, e.gen
	r.wg.Go(func() {
		im, err := r.loop.Docker.Inspect(ctx, key)
		select {
		case r.checked <- checkDone{key: key, gen: gen, im: im, err: err}:
		case <-r.stopped:
		}
	})
}

func (r *loopRun) finishCheck(ctx context.Context, c checkDone, now time.Time) {
	e, ok := r.entries[c.key]
	if !ok || e.gen != c.gen {
		return
	}
	e.checking = false
	switch {
	case errors.Is(c.err, registry.ErrNotFound):
		r.gone(e)
	case c.err != nil:
		if registry.IsDaemonDown(c.err) {
			r.dockerDown(c.err, now)
		}
		if e.cancel == nil {
			e.due = time.Time{} // let a fetch find out
		}
	case c.im.ID != e.imageID:
		// expected names other content now: check it in full.
		r.loop.Log.Debug("expected names other content after a Docker event; checking it", "image", e.img.Expected, "image_id", c.im.ID)
		e.imageID = c.im.ID
		if e.cancel == nil {
			e.due = time.Time{}
		}
	default:
		r.loop.Log.Debug("a Docker event left expected in place", "image", e.img.Expected, "image_id", c.im.ID)
	}
	if e.recheck && e.cancel == nil {
		e.recheck = false
		r.check(ctx, e)
	}
}

// gone records that expected is no longer on the node: readiness says so at
// once, and the restore is due now.
func (r *loopRun) gone(e *entry) {
	if !e.removed {
		e.removed = true
		r.obs.ImageRemoved()
		r.loop.Log.Debug("Docker removed an image the node keeps; restoring it", "image", e.img.Expected, "image_id", e.imageID)
	}
	e.imageID = ""
	if e.cancel == nil { // else the fetch in flight is the restore
		e.state, e.due, e.retrying = StateWanted, time.Time{}, false
	}
}

// dockerDown records that the Docker daemon can't be reached: logged once
// per outage, and readiness fails until it is back.
func (r *loopRun) dockerDown(err error, now time.Time) {
	if r.dockerErr == "" {
		r.dockerSince = now
		r.loop.Log.Error("the Docker daemon is unreachable; retrying with backoff", "error", err.Error())
		r.obs.DockerUp(false)
	}
	r.dockerErr = err.Error()
}

// dockerUp records that the Docker daemon answered. After an outage, every
// failing image is retried now rather than at the end of its backoff.
func (r *loopRun) dockerUp(now time.Time) {
	r.obs.DockerUp(true)
	if r.dockerErr == "" {
		return
	}
	r.loop.Log.Info("the Docker daemon is reachable again", "down_for", now.Sub(r.dockerSince).Round(time.Second).String())
	r.dockerErr = ""
	for _, e := range r.entries {
		if e.retrying && e.cancel == nil {
			e.due = time.Time{}
		}
	}
}

// dockerBack makes every entry due now: the event subscription was made
// again after it broke, and whatever happened meanwhile (a daemon restart,
// an image GC) is unknown.
func (r *loopRun) dockerBack() {
	r.dockerUp(time.Now())
	for _, e := range r.entries {
		if e.cancel == nil {
			e.due = time.Time{}
		}
	}
}

func (r *loopRun) shutdown() {
	close(r.stopped)
	for _, e := range r.entries {
		if e.cancel != nil {
			e.cancel()
		}
	}
	for r.running > 0 {
		<-r.done
		r.running--
	}
	r.wg.Wait()
}

func (r *loopRun) publish() {
	s := Snapshot{Config: r.path, ConfigLoaded: r.loaded, ConfigError: r.cfgErr, DockerError: r.dockerErr, Images: make([]ImageStatus, 0, len(r.order))}
	if r.dockerErr != "" {
		t := r.dockerSince
		s.DockerDownSince = &t
	}
	if r.discovering != nil {
		st := r.discovered.Status
		s.Nomad = &st
	}
	s.Foreground = r.foregroundStatus()
	for _, key := range r.order {
		e := r.entries[key]
		img := ImageStatus{
			Name: e.img.Name, Expected: e.img.Expected, State: e.state, ImageID: e.imageID,
			Source: e.source, Result: string(e.result), Attempts: e.fails.Attempts(), LastError: e.lastErr,
			Origin: e.origin, UsedBy: e.usedBy,
		}
		if e.retrying && e.cancel == nil {
			t := e.due
			img.NextRetry = &t
		}
		if !e.lastOK.IsZero() {
			t := e.lastOK
			img.LastSuccess = &t
		}
		if e.fails.Down() {
			t := e.fails.Since()
			img.FailingSince = &t
		}
		s.Images = append(s.Images, img)
	}
	r.loop.snap.Store(&s)
}

// watchEvents follows Docker's image events, sending each untag and delete
// on events. While subscribed it pings the daemon every HealthInterval. When
// the subscription breaks or a ping fails it resubscribes at once; if that
// fails too, docker gets the error (the daemon is unreachable) and it keeps
// resubscribing with backoff. Each time a lost subscription is made again,
// docker gets a nil: whatever happened meanwhile (a daemon restart, an image
// GC) is unknown, so every image is checked.
func (l *Loop) watchEvents(ctx context.Context, events chan<- registry.ImageEvent, docker chan<- dockerEvent) {
	first := cmp.Or(l.EventRetry, time.Second)
	interval := cmp.Or(l.HealthInterval, 30*time.Second)
	tell := func(ev dockerEvent) {
		select {
		case docker <- ev:
		case <-ctx.Done():
		}
	}
	failures := 0
	subscribedOnce, down := false, false
	for ctx.Err() == nil {
		err := l.follow(ctx, interval, events, func(resubscribed bool) {
			if resubscribed && failures > 0 {
				l.Log.Info("Docker image events restored; checking every image")
				down = false
			}
			tell(dockerEvent{resubscribed: resubscribed && failures > 0})
			failures = 0
			subscribedOnce = true
		})
		if ctx.Err() != nil {
			return
		}
		failures++
		if failures == 1 && subscribedOnce {
			l.Log.Warn("Docker image events lost; resubscribing", "error", err.Error())
			continue // at once: a stream that merely broke comes back
		}
		if !down {
			down = true
			tell(dockerEvent{err: err})
		}
		l.Log.Debug("Docker image events still unavailable", "error", err.Error(), "attempts", failures)
		select {
		case <-time.After(backoff.Policy{Min: first, Max: 30 * time.Second, Jitter: 0.2}.Delay(failures-1, rand.Float64())):
		case <-ctx.Done():
			return
		}
	}
}

// follow subscribes to image events and forwards them until the stream
// breaks or a health ping fails. It calls answered(true) once the
// subscription is made and answered(false) after each health ping the
// daemon answers, and returns why it stopped.
func (l *Loop) follow(ctx context.Context, interval time.Duration, events chan<- registry.ImageEvent, answered func(subscribed bool)) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	evs, errs, err := l.Events.ImageEvents(sctx)
	if err != nil {
		return err
	}
	answered(true)
	health := time.NewTicker(interval)
	defer health.Stop()
	for {
		select {
		case ev, ok := <-evs:
			if !ok {
				err := <-errs
				if cause := context.Cause(sctx); cause != nil && ctx.Err() == nil {
					err = cause
				}
				return err
			}
			select {
			case events <- ev:
			case <-ctx.Done():
			}
		case <-health.C:
			if err := l.Events.Ping(sctx); err != nil {
				if ctx.Err() == nil {
					cancel(err) // ends the stream; its error is this one
				}
			} else {
				answered(false)
			}
		}
	}
}
