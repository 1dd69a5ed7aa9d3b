package agent

// Docker's side: image removals, checks of an image's presence, the
// daemon going and coming back.

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// dockerEvent is what the event watcher tells the loop about the daemon.
type dockerEvent struct {
	err error // set: the daemon is unreachable
	// resubscribed: the subscription was made again after it broke, and
	// what happened meanwhile is unknown. Neither: the daemon answered.
	resubscribed bool
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
		if e.phase != phasePulling {
			e.due = time.Time{} // let a fetch find out
		}
	case c.im.ID != e.imageID:
		// expected names other content now: check it in full.
		r.loop.Log.Debug("expected names other content after a Docker event; checking it", "image", e.img.Expected, "image_id", c.im.ID)
		e.imageID = c.im.ID
		if e.phase != phasePulling {
			e.due = time.Time{}
		}
	default:
		r.loop.Log.Debug("a Docker event left expected in place", "image", e.img.Expected, "image_id", c.im.ID)
	}
	if e.recheck && e.phase != phasePulling {
		e.recheck = false
		r.check(ctx, e)
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
		if e.retrying && e.phase != phasePulling {
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
		if e.phase != phasePulling {
			e.due = time.Time{}
		}
	}
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
