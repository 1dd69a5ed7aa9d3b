package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
	"github.com/nomad-prefetch/nomad-prefetch/status"
)

// ImageEventer streams the daemon's image removals. *registry.Engine
// implements it.
type ImageEventer interface {
	ImageEvents(ctx context.Context) (<-chan registry.ImageEvent, <-chan error, error)
}

var _ ImageEventer = (*registry.Engine)(nil)

// Daemon keeps every image of the current config present: `prefetch run`.
//
// One loop owns all per-image state. It reconciles every image at start, an
// image again when its config entry changes, when its retry comes due
// (capped exponential backoff, honouring a registry's Retry-After), when its
// resync comes due (resync_interval plus up to 10% jitter), when Docker
// reports its image untagged or deleted (Nomad's image GC), and every image
// on SIGHUP or when the Docker daemon comes back. Fetches run on their own
// goroutines, at most concurrency at once, and report back to the loop.
type Daemon struct {
	Docker  Docker
	Events  ImageEventer
	Remote  Digester // optional
	Metrics *status.Metrics
	Log     *slog.Logger
	// EventRetry is the first wait before resubscribing to Docker's events
	// after the stream broke (doubling, capped at 30 s); default 1 s.
	EventRetry time.Duration

	snap atomic.Pointer[status.Snapshot]
	ping chan chan struct{}
	once sync.Once
}

func (d *Daemon) init() {
	d.once.Do(func() {
		d.ping = make(chan chan struct{})
		d.snap.Store(&status.Snapshot{})
	})
}

// Snapshot returns the state as of the loop's last change.
func (d *Daemon) Snapshot() status.Snapshot {
	d.init()
	return *d.snap.Load()
}

// Alive reports whether the loop answers within two seconds.
func (d *Daemon) Alive() bool {
	d.init()
	reply := make(chan struct{})
	timeout := time.NewTimer(2 * time.Second)
	defer timeout.Stop()
	select {
	case d.ping <- reply:
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
	state    string
	imageID  string
	source   string
	result   Outcome
	lastErr  string
	due      time.Time // next check: a retry, a resync, or zero for now
	retrying bool      // due is a retry after a failure
	lastOK   time.Time
	cancel   context.CancelFunc // set while a fetch is in flight
	gen      uint64             // bumped when the entry changes, to drop stale results
	fails    failureLog
}

type fetchDone struct {
	key    string
	gen    uint64
	result Result
}

type loop struct {
	d       *Daemon
	path    string
	cfg     config.Config
	src     []byte // the config file's content, to tell a real change
	loaded  time.Time
	cfgErr  string
	entries map[string]*entry
	order   []string // expected references in config order
	running int
	done    chan fetchDone
	wg      sync.WaitGroup
	gen     uint64

	dockerDown bool
}

// Run reconciles until ctx is done, starting from cfg (loaded from path by
// the caller, which reports a bad config at start as a usage error).
// Each receive on changed reloads the file; each on hup reloads it and checks
// every image now. A config that fails to load is logged once, with every
// problem's file:line:col, and the last good one stays in force. Run returns
// nil after cancelling the fetches in flight and waiting for them.
func (d *Daemon) Run(ctx context.Context, path string, cfg config.Config, changed, hup <-chan struct{}) error {
	d.init()
	src, _ := os.ReadFile(path)
	l := &loop{d: d, path: path, src: src, entries: map[string]*entry{}, done: make(chan fetchDone)}
	l.apply(cfg, time.Now())
	d.Metrics.Reloaded("ok", l.loaded)

	removed := make(chan string)
	back := make(chan struct{}, 1)
	evCtx, stopEvents := context.WithCancel(ctx)
	var evWG sync.WaitGroup
	evWG.Go(func() { d.watchEvents(evCtx, removed, back) })
	defer func() {
		stopEvents()
		evWG.Wait()
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		l.startDue(ctx, now)
		l.publish()
		timer.Reset(l.nextDue(now))
		select {
		case <-ctx.Done():
			l.shutdown()
			return nil
		case res := <-l.done:
			l.finish(res, time.Now())
		case <-changed:
			l.reload(false)
		case <-hup:
			d.Log.Info("SIGHUP: reloading the config and checking every image")
			l.reload(true)
		case id := <-removed:
			l.imageRemoved(id)
		case <-back:
			l.dockerBack()
		case reply := <-d.ping:
			close(reply)
		case <-timer.C:
		}
	}
}

// apply makes cfg the config in force: new entries are due now, removed
// ones stop (their fetch is cancelled; no image is ever deleted), changed
// ones start over.
func (l *loop) apply(cfg config.Config, now time.Time) (added, changed, removed int) {
	l.cfg, l.loaded, l.cfgErr = cfg, now, ""
	for _, w := range cfg.Warnings {
		l.d.Log.Warn("config: "+w.Msg, "at", w.Pos.String())
	}
	keep := map[string]bool{}
	l.order = l.order[:0]
	for _, img := range cfg.Images {
		keep[img.Expected] = true
		l.order = append(l.order, img.Expected)
		e, ok := l.entries[img.Expected]
		switch {
		case !ok:
			l.entries[img.Expected] = &entry{img: img, state: status.Wanted}
			added++
		case !sameImage(e.img, img):
			if e.cancel != nil {
				e.cancel()
				e.cancel = nil
			}
			l.gen++
			*e = entry{img: img, state: status.Wanted, imageID: e.imageID, source: e.source, gen: l.gen}
			changed++
		default:
			e.img = img // the name or position may have moved
		}
	}
	for key, e := range l.entries {
		if !keep[key] {
			if e.cancel != nil {
				e.cancel()
			}
			delete(l.entries, key)
			removed++
		}
	}
	return added, changed, removed
}

func sameImage(a, b config.Image) bool {
	a.Pos, b.Pos, a.Name, b.Name = config.Pos{}, config.Pos{}, "", ""
	return reflect.DeepEqual(a, b)
}

func (l *loop) reload(all bool) {
	now := time.Now()
	src, err := os.ReadFile(l.path)
	var cfg config.Config
	if err == nil {
		cfg, err = config.Parse(l.path, src)
	}
	if err != nil {
		msg := err.Error()
		if errors.Is(err, fs.ErrNotExist) {
			msg = fmt.Sprintf("config file %s is missing; keeping the last good config", l.path)
		}
		if msg != l.cfgErr {
			var errs config.Errors
			if errors.As(err, &errs) {
				l.d.Log.Error("config not loaded; keeping the last good config", "file", l.path, "problems", len(errs), "error", msg)
			} else {
				l.d.Log.Warn(msg, "file", l.path)
			}
		}
		l.cfgErr = msg
		l.d.Metrics.Reloaded("failed", now)
	} else if !all && bytes.Equal(src, l.src) && l.cfgErr == "" {
		l.d.Metrics.Reloaded("unchanged", now)
	} else {
		wasBroken := l.cfgErr != ""
		l.src = src
		added, changed, removed := l.apply(cfg, now)
		l.d.Metrics.Reloaded("ok", now)
		l.d.Log.Info("config loaded", "file", l.path, "images", len(cfg.Images), "added", added, "changed", changed, "removed", removed, "recovered", wasBroken)
	}
	if all {
		for _, e := range l.entries {
			e.due, e.retrying = time.Time{}, false
		}
	}
}

// startDue starts fetches for entries that are due, in config order, while
// fewer than concurrency run.
func (l *loop) startDue(ctx context.Context, now time.Time) {
	for _, key := range l.order {
		if l.running >= l.cfg.Concurrency {
			return
		}
		e := l.entries[key]
		if e.cancel != nil || e.due.After(now) {
			continue
		}
		fctx, cancel := context.WithCancel(ctx)
		e.cancel = cancel
		e.state = status.Pulling
		l.running++
		f := &Fetcher{Docker: l.d.Docker, Remote: l.d.Remote, PullTimeout: l.cfg.PullTimeout, Log: l.d.Log, FallbackLevel: slog.LevelDebug}
		img, gen := e.img, e.gen
		l.wg.Go(func() {
			defer cancel()
			l.done <- fetchDone{key: key, gen: gen, result: f.Fetch(fctx, img)}
		})
	}
}

// nextDue returns how long until the earliest idle entry is due. With every
// fetch slot busy, entries already due wait for a fetch to finish (which
// wakes the loop), not for a timer that would fire at once and spin.
func (l *loop) nextDue(now time.Time) time.Duration {
	wait := time.Hour
	if l.running >= l.cfg.Concurrency {
		return wait
	}
	for _, e := range l.entries {
		if e.cancel == nil {
			wait = min(wait, max(e.due.Sub(now), 0))
		}
	}
	return wait
}

func (l *loop) finish(res fetchDone, now time.Time) {
	l.running--
	e, ok := l.entries[res.key]
	if !ok || e.gen != res.gen || e.cancel == nil {
		return // removed or changed while in flight: its result is moot
	}
	e.cancel = nil
	r := res.result
	from := "none"
	if r.OK() {
		from = "expected"
		if r.Source != "" {
			from = "source"
		}
	}
	l.d.Metrics.Fetched(string(r.Outcome), from, r.Duration)
	e.result = r.Outcome
	log := l.d.Log.With("image", e.img.Expected, "name", e.img.Name)

	if r.Outcome == Failed || r.Outcome == Stale {
		e.lastErr = r.Err.Error()
		e.state = status.Failed
		e.imageID = ""
		if r.Outcome == Stale {
			e.state, e.imageID = status.Present, r.ImageID
		}
		delay := backoff.Policy{Min: l.cfg.RetryInitial, Max: l.cfg.RetryMax, Jitter: 0.2}.Delay(e.fails.attempts+1, rand.Float64())
		delay = max(delay, retryAfter(r.Err))
		e.due, e.retrying = now.Add(delay), true
		level, why := e.fails.failed(now, e.lastErr, l.cfg.AlertAfter)
		if registry.IsDaemonDown(r.Err) {
			// One line for the whole outage, not one per image.
			level = slog.LevelDebug
			if !l.dockerDown {
				l.dockerDown = true
				l.d.Log.Error("the Docker daemon is unreachable; retrying with backoff", "error", e.lastErr)
			}
		}
		if r.Outcome == Stale && level == slog.LevelError {
			level = slog.LevelWarn
		}
		msg := "image not available"
		if r.Outcome == Stale {
			msg = "image present but not refreshed"
		}
		log.Log(context.Background(), level, msg, "why_logged", why, "attempts", e.fails.attempts,
			"failing_for", now.Sub(e.fails.since).Round(time.Second).String(), "next_retry_in", delay.Round(time.Millisecond).String(), "error", e.lastErr)
		return
	}

	if l.dockerDown {
		l.dockerDown = false
		l.d.Log.Info("the Docker daemon is reachable again")
	}
	e.state, e.imageID, e.source, e.lastErr, e.lastOK = status.Present, r.ImageID, r.Source, "", now
	e.due = now.Add(l.cfg.ResyncInterval + time.Duration(rand.Float64()*0.1*float64(l.cfg.ResyncInterval)))
	e.retrying = false
	attrs := []any{"result", string(r.Outcome), "duration", r.Duration.Round(time.Millisecond).String(), "image_id", r.ImageID}
	if r.Source != "" {
		attrs = append(attrs, "source", r.Source)
	}
	if attempts, downtime, ok := e.fails.recovered(now); ok {
		log.Info("image recovered", append(attrs, "failed_attempts", attempts, "downtime", downtime.Round(time.Second).String())...)
		return
	}
	level := slog.LevelInfo
	if r.Outcome == UpToDate {
		level = slog.LevelDebug // a resync that changed nothing
	}
	log.Log(context.Background(), level, "image ready", attrs...)
}

// imageRemoved makes every entry whose image has that ID due now.
func (l *loop) imageRemoved(id string) {
	for _, e := range l.entries {
		if e.imageID == id && e.cancel == nil {
			l.d.Log.Info("Docker removed an expected image; restoring it", "image", e.img.Expected, "image_id", id)
			l.d.Metrics.ImageRemoved()
			e.due, e.retrying = time.Time{}, false
		}
	}
}

// dockerBack makes every entry due now: the daemon restarted or came back,
// and images may have gone with it.
func (l *loop) dockerBack() {
	for _, e := range l.entries {
		if e.cancel == nil {
			e.due = time.Time{}
		}
	}
}

func (l *loop) shutdown() {
	for _, e := range l.entries {
		if e.cancel != nil {
			e.cancel()
		}
	}
	for l.running > 0 {
		<-l.done
		l.running--
	}
	l.wg.Wait()
}

func (l *loop) publish() {
	s := status.Snapshot{Config: l.path, ConfigLoaded: l.loaded, ConfigError: l.cfgErr, Images: make([]status.Image, 0, len(l.order))}
	for _, key := range l.order {
		e := l.entries[key]
		img := status.Image{
			Name: e.img.Name, Expected: e.img.Expected, State: e.state, ImageID: e.imageID,
			Source: e.source, Result: string(e.result), Attempts: e.fails.attempts, LastError: e.lastErr,
		}
		if e.retrying && e.cancel == nil {
			t := e.due
			img.NextRetry = &t
		}
		if !e.lastOK.IsZero() {
			t := e.lastOK
			img.LastSuccess = &t
		}
		if e.fails.attempts > 0 {
			t := e.fails.since
			img.FailingSince = &t
		}
		s.Images = append(s.Images, img)
	}
	l.d.snap.Store(&s)
}

// watchEvents follows Docker's image events, sending the ID of each removed
// image on removed, and resubscribing with backoff while the daemon is away;
// back gets a signal each time a lost subscription is made again, since
// whatever happened meanwhile (a daemon restart, an image GC) is unknown.
func (d *Daemon) watchEvents(ctx context.Context, removed chan<- string, back chan<- struct{}) {
	first := d.EventRetry
	if first <= 0 {
		first = time.Second
	}
	failures := 0
	for ctx.Err() == nil {
		events, errs, err := d.Events.ImageEvents(ctx)
		if err == nil {
			if failures > 0 {
				d.Log.Info("Docker image events restored; checking every image")
				select {
				case back <- struct{}{}:
				default:
				}
			}
			failures = 0
			for ev := range events {
				select {
				case removed <- ev.ID:
				case <-ctx.Done():
				}
			}
			err = <-errs
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		if failures == 1 {
			d.Log.Warn("Docker image events lost; resubscribing", "error", err.Error())
		} else {
			d.Log.Debug("Docker image events still unavailable", "error", err.Error(), "attempts", failures)
		}
		select {
		case <-time.After(backoff.Policy{Min: first, Max: 30 * time.Second, Jitter: 0.2}.Delay(failures, rand.Float64())):
		case <-ctx.Done():
			return
		}
	}
}
