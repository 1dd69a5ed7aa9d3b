package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/halock"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	outagelog "github.com/nomad-prefetch/nomad-prefetch/outage"
)

// HA mode (-ha-lock): instances contend for a Nomad variable lock; the
// holder streams and keeps its checkpoint in the lock's items
// (checkpoint.go), the others wait as standbys. Losing the lock stops the
// stream (lease.go) and makes the instance a standby again.

// haState is what /healthz and /metrics show of the HA lock.
type haState struct {
	active     atomic.Bool
	lost       atomic.Uint64
	checkpoint atomic.Uint64

	mu        sync.Mutex
	lockErr   string    // the last failure of a standby's lock request; "" when they work
	downSince time.Time // since when they fail
	refused   bool      // Nomad refused them (token, ACL policy)
}

func (s *haState) failed(err error, refused bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockErr, s.refused = err.Error(), refused
	if s.downSince.IsZero() {
		s.downSince = now
	}
}

func (s *haState) ok() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lockErr, s.refused, s.downSince = "", false, time.Time{}
}

// haHealth is /healthz for a standby: healthy, unless its lock requests
// are refused or have failed for longer than grace.
func (s *haState) health(now time.Time, grace time.Duration) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.refused:
		return http.StatusServiceUnavailable, "standby, but Nomad refuses the HA lock's requests: " + s.lockErr
	case !s.downSince.IsZero() && now.Sub(s.downSince) >= grace:
		return http.StatusServiceUnavailable, fmt.Sprintf("standby, but the HA lock's requests have failed for %s: %s", now.Sub(s.downSince).Round(time.Second), s.lockErr)
	case s.lockErr != "":
		return http.StatusOK, "standby (the HA lock's requests fail: " + s.lockErr + ")"
	}
	return http.StatusOK, "standby: another instance holds the HA lock"
}

// ha runs an instance in HA mode.
type ha struct {
	o      Options
	client *nomad.Client
	lock   *nomad.VarLock
	stats  *nomad.Stats
	state  *haState
	log    *slog.Logger
	now    func() time.Time
}

// run alternates standby and holding until ctx ends or a failure stops
// the instance.
func (h *ha) run(ctx context.Context) error {
	if n := growPipe(h.o.Stdout, pipeBytes); n > 0 {
		h.log.Debug("stdout is a pipe: its capacity raised, so that a checkpoint's batch is written in one go", "bytes", n)
	}
	for {
		ls, err := h.standby(ctx)
		if err != nil || ls == nil {
			return err
		}
		err = h.hold(ctx, ls)
		var lost *halock.LostError
		if !errors.As(err, &lost) {
			return err
		}
		h.state.lost.Add(1)
		if ctx.Err() != nil {
			h.log.Warn("HA lock lost while stopping; the next holder resumes from the checkpoint",
				"reason", lost.Reason.Error(), "checkpoint", h.state.checkpoint.Load())
			return nil
		}
		h.log.Error("HA lock lost: stopped writing events; another instance may take over, this one waits as a standby",
			"reason", lost.Reason.Error(), "checkpoint", h.state.checkpoint.Load())
	}
}

// standby tries to acquire the lock until it does (a lease) or ctx ends
// (nil, nil), as a halock.Contender: the acquire carries the variable's
// items over, so that the checkpoint the last holder left survives (Nomad
// writes the variable from an acquire's body; recorded from Nomad 2.0.5: a
// lapse and a release keep the items, an acquire without them does not).
// Failing requests are reported as the stream's outages are.
func (h *ha) standby(ctx context.Context) (*halock.Lease, error) {
	var run outagelog.Log
	announced := false
	c := &halock.Contender{
		Lock: h.lock, TTL: h.o.HATTL, LockDelay: h.o.HALockDelay, Now: h.now, Log: h.log,
		Held: func(nomad.Variable) {
			h.state.ok()
			if !announced {
				announced = true
				h.log.Info("standby: another instance holds the HA lock; taking over when it is released or lapses", "lock", h.lock.Path())
			}
		},
		Failed: func(err error, refused bool, attempt int, delay time.Duration) {
			h.reportLockFailure(&run, err, refused, attempt, delay)
		},
		Working: func() {
			h.state.ok()
			if attempts, down, ok := run.Recovered(h.now()); ok {
				h.log.Info("HA lock requests work again", "attempts", attempts, "downtime", down.Round(time.Millisecond).String())
			}
		},
	}
	ls, err := c.Acquire(ctx)
	var bad *halock.BadRequestError
	if errors.As(err, &bad) {
		return nil, &ConfigError{fmt.Errorf("acquiring the HA lock %s: refused as a bad request (check -ha-lock, and -ha-ttl: Nomad takes 10s to 24h): %w", h.lock.Path(), errors.Unwrap(bad.Err))}
	}
	return ls, err
}

// reportLockFailure logs a failed lock request without flooding, as the
// stream's outages are logged.
func (h *ha) reportLockFailure(run *outagelog.Log, err error, refused bool, attempt int, delay time.Duration) {
	now := h.now()
	h.state.failed(err, refused, now)
	attrs := []any{"lock", h.lock.Path(), "error", err.Error(), "attempt", attempt, "retry_in", delay.Round(time.Millisecond).String()}
	level := slog.LevelWarn
	if refused {
		level = slog.LevelError
		attrs = append(attrs, "check", "the token's ACL policy must grant read and write on the variable path (nomad/jobs/eventlog-policy.hcl)")
	}
	switch run.Failed(now, err.Error(), h.o.AlertAfter) {
	case outagelog.First, outagelog.Changed:
		h.log.Log(context.Background(), level, "HA lock requests failing", attrs...)
	case outagelog.Reminder:
		h.log.Error("HA lock requests still failing", append(attrs, "down_for", now.Sub(run.Since()).Round(time.Second).String())...)
	default:
		h.log.Debug("HA lock requests still failing", attrs...)
	}
}

// hold streams while the lease holds, from the lock's checkpoint.
func (h *ha) hold(ctx context.Context, ls *halock.Lease) error {
	h.state.active.Store(true)
	defer h.state.active.Store(false)
	items, cas, start, err := h.resume(ctx, ls)
	if err != nil {
		if ls.Held() == nil {
			h.release(ls)
		}
		return err
	}
	if ctx.Err() != nil {
		h.release(ls)
		return nil
	}
	h.state.checkpoint.Store(0)
	if start.Written {
		h.state.checkpoint.Store(start.Index)
	}
	h.log.Info("HA lock acquired: streaming", "lock", h.lock.Path(), "index", indexString(start.Index), "resume", start.Written)
	var committed nomad.Position // the checkpoint read: none when not Written
	if start.Written {
		committed = start
	}
	c := &committer{
		g: newGate(committed), lease: ls, lock: h.lock, out: h.o.Stdout,
		interval: max(h.o.StateInterval, time.Millisecond), now: h.now, log: h.log, state: h.state,
		items: items, cas: cas, committed: committed,
	}
	return h.term(ctx, ls, c, start)
}

// resume reads the checkpoint from the lock's variable, retrying while
// the lock is held.
func (h *ha) resume(ctx context.Context, ls *halock.Lease) (map[string]string, uint64, nomad.Position, error) {
	var v nomad.Variable
	for {
		if err := ls.Held(); err != nil {
			return nil, 0, nomad.Position{}, err
		}
		var found bool
		var err error
		v, found, err = h.lock.Read(ctx, 0, 0)
		if ctx.Err() != nil {
			return nil, 0, nomad.Position{}, nil
		}
		if err == nil && !found {
			ls.Lose(errors.New("the lock's variable is gone"))
			continue
		}
		if err == nil {
			break
		}
		h.log.Debug("reading the HA checkpoint failed; retrying while the lock is held", "error", err.Error())
		if backoff.Sleep(ctx, 250*time.Millisecond) != nil {
			return nil, 0, nomad.Position{}, nil
		}
	}
	s, ok := v.Items["index"]
	if !ok {
		return v.Items, v.ModifyIndex, nomad.Position{Index: h.o.Index}, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, 0, nomad.Position{}, &ConfigError{fmt.Errorf("the HA lock's variable %s holds index %q, want a raft index (fix or delete the item)", h.lock.Path(), s)}
	}
	// frames: how many frames at index were written; absent (a checkpoint
	// from before it was kept) means all of them.
	frames := 0
	if f, ok := v.Items["frames"]; ok {
		if frames, err = strconv.Atoi(f); err != nil || frames < 0 {
			return nil, 0, nomad.Position{}, &ConfigError{fmt.Errorf("the HA lock's variable %s holds frames %q, want a count (fix or delete the item)", h.lock.Path(), f)}
		}
	}
	return v.Items, v.ModifyIndex, nomad.Position{Index: n, Written: true, Frames: frames}, nil
}

// term runs the stream, the lease's renewals and the committer until ctx
// ends, the lock is lost or stdout fails; then, unless the lock was lost,
// it commits what is left and releases the lock, so that a standby takes
// over at once.
func (h *ha) term(ctx context.Context, ls *halock.Lease, c *committer, start nomad.Position) error {
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() {
		ls.Keep(tctx)
		if err := ls.Held(); err != nil {
			cancel(err)
		}
	})
	var commitErr error
	wg.Go(func() {
		if commitErr = c.loop(tctx); commitErr != nil {
			cancel(commitErr)
		}
	})
	stopGate := context.AfterFunc(tctx, func() {
		var lost *halock.LostError
		if cause := context.Cause(tctx); errors.As(cause, &lost) {
			c.g.stop(cause)
			return
		}
		c.g.stop(nil)
	})
	defer stopGate()
	st := nomad.NewStreamer(h.client, h.streamConfig())
	runErr := st.Run(tctx, lines(h.o, c.g, 0, c.g.flushed), start)
	cancel(nil)
	wg.Wait()

	var we *nomad.WriteError
	switch lost := ls.Held(); {
	case lost != nil:
		return lost
	case commitErr != nil:
		if errors.As(commitErr, &we) {
			h.release(ls)
		}
		return commitErr
	case runErr != nil && !errors.As(runErr, new(*halock.LostError)):
		h.release(ls)
		return runErr
	}
	if err := c.commit(); err != nil { // what came before the stop
		if ls.Held() == nil {
			h.release(ls)
		}
		return err
	}
	h.release(ls)
	return nil
}

func (h *ha) streamConfig() nomad.Config {
	return nomad.Config{
		Subscription:     nomad.Subscription{Topics: h.o.Topics, Namespace: h.o.Namespace},
		HeartbeatTimeout: h.o.HeartbeatTimeout,
		MaxFrameBytes:    h.o.MaxFrameBytes,
		AlertAfter:       h.o.AlertAfter,
		Locate:           locate(h.o),
		Logger:           h.log,
		Stats:            h.stats,
	}
}

// release lets the lock go, so that a standby takes over without waiting
// for the TTL and the lock delay.
func (h *ha) release(ls *halock.Lease) {
	ctx, cancel := context.WithTimeout(context.Background(), h.lock.CallTimeout)
	defer cancel()
	if err := h.lock.Release(ctx, ls.ID()); err != nil {
		h.log.Warn("HA lock not released: a standby takes over once it lapses", "lock", h.lock.Path(), "error", err.Error())
		return
	}
	h.log.Info("HA lock released", "lock", h.lock.Path(), "checkpoint", h.state.checkpoint.Load())
}
