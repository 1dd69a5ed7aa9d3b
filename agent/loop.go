package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	Docker  Docker
	Events  ImageEventer
	Remote  Digester   // optional
	Auths   AuthSetter // optional: given the auth blocks of each config put in force
	Bundles Bundles    // optional: serves the bundle: sources
	// Peers, when set, is asked for images while the config has a nomad
	// block with a peers block.
	Peers    Peers
	Observer Observer // optional: told what happens, for the metrics
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
	stall  atomic.Int64 // the config in force's stall_timeout, in ns
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

// StallTimeout is the stall_timeout of the config in force (0 before the
// first): what the agent's own served transfers are bounded by, read at
// each one, so that a reload changes it as it changes the pulls'.
func (l *Loop) StallTimeout() time.Duration { return time.Duration(l.stall.Load()) }

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
	phase    phase
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

func (e *entry) busy() bool { return e.phase == phasePulling || e.checking }

// phase is where an entry is in its cycle, one at a time; the Snapshot
// shows it as State. The flags beside it in entry are orthogonal to it:
// retrying (why due is set), checking and recheck (an inspect after a
// Docker event, which may overlap a fetch), removed, fg and yielded (the
// fetch in flight's relation to Nomad's pulls).
type phase int

const (
	phaseWanted  phase = iota // not yet checked, or due for a check
	phasePulling              // a fetch is in flight: cancel is set
	phasePresent              // expected is present locally
	phaseFailed               // the last attempt failed and expected is absent
)

func (p phase) String() string {
	switch p {
	case phasePulling:
		return StatePulling
	case phasePresent:
		return StatePresent
	case phaseFailed:
		return StateFailed
	}
	return StateWanted
}

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
	r.loop.stall.Store(int64(cfg.StallTimeout))
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
			e = &entry{img: img, host: hostOf(img.Expected), phase: phaseWanted, gen: r.gen}
			r.entries[img.Expected] = e
			added++
		case !sameImage(e.img, img):
			if e.phase == phasePulling {
				e.cancel()
				e.cancel = nil
			}
			r.gen++
			*e = entry{img: img, host: e.host, phase: phaseWanted, imageID: e.imageID, source: e.source, gen: r.gen}
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
			if e.phase == phasePulling {
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

func (r *loopRun) shutdown() {
	close(r.stopped)
	for _, e := range r.entries {
		if e.phase == phasePulling {
			e.cancel()
		}
	}
	for r.running > 0 {
		<-r.done
		r.running--
	}
	r.wg.Wait()
}
