package agent

// A fetch's end: the entry's next state, its retry or resync.

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

func (r *loopRun) finish(res fetchDone, now time.Time) {
	r.running--
	e, ok := r.entries[res.key]
	if !ok || e.gen != res.gen || e.phase != phasePulling {
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
		e.phase, e.due, e.recheck = phaseWanted, time.Time{}, false
		if e.imageID != "" {
			e.phase = phasePresent
		}
		log.Debug("background fetch cancelled while yielding to Nomad's pulls; retried after", "result", string(result.Outcome))
		return
	}
	if e.recheck {
		// Docker removed an image while this fetch ran: what it found may
		// be gone already. Start over, with nothing counted or logged.
		e.recheck, e.phase, e.due = false, phaseWanted, time.Time{}
		log.Debug("a Docker removal came during the fetch; checking again", "result", string(result.Outcome))
		return
	}
	from := "none"
	if result.OK() {
		from = "expected"
		switch {
		case strings.HasPrefix(result.Source, PeerSource):
			from = "peer"
		case result.Source != "":
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
	e.phase = phaseFailed
	e.imageID = ""
	if res.Outcome == Stale {
		e.phase, e.imageID = phasePresent, res.ImageID
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
	e.phase, e.imageID, e.source, e.lastErr, e.lastOK = phasePresent, res.ImageID, res.Source, "", now
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

// gone records that expected is no longer on the node: readiness says so at
// once, and the restore is due now.
func (r *loopRun) gone(e *entry) {
	if !e.removed {
		e.removed = true
		r.obs.ImageRemoved()
		r.loop.Log.Debug("Docker removed an image the node keeps; restoring it", "image", e.img.Expected, "image_id", e.imageID)
	}
	e.imageID = ""
	if e.phase != phasePulling { // else the fetch in flight is the restore
		e.phase, e.due, e.retrying = phaseWanted, time.Time{}, false
	}
}
