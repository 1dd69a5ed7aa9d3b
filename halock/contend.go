package halock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// Contender contends for a lock. Its hooks are optional.
type Contender struct {
	Lock *nomad.VarLock
	// TTL and LockDelay are asked of Nomad at each acquire; LockDelay is
	// also the longest wait between two attempts while another holds it.
	TTL, LockDelay time.Duration
	Now            func() time.Time                           // default time.Now
	Log            *slog.Logger                               // the Lease's renewal lines
	Rand           func() float64                             // backoff jitter (default rand.Float64)
	Sleep          func(context.Context, time.Duration) error // default backoff.Sleep
	// Items makes the acquire's items from those the variable holds (nil
	// when it holds none or does not exist). nil carries them over.
	Items func(read map[string]string) map[string]string
	// Held is called with the variable each time a read shows it locked
	// by another (a holder found, or a new one).
	Held func(v nomad.Variable)
	// Failed is called for each failed request, with whether Nomad refused
	// it (401/403: the token or its policy), the attempt and the retry
	// delay; Working when requests work again after failures.
	Failed  func(err error, refused bool, attempt int, delay time.Duration)
	Working func()
}

// BadRequestError is an acquire Nomad refused as a bad request (400: a
// TTL or lock delay it does not take): retrying does not help.
type BadRequestError struct{ Err error }

func (e *BadRequestError) Error() string { return e.Err.Error() }
func (e *BadRequestError) Unwrap() error { return e.Err }

func (c *Contender) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Contender) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	return backoff.Sleep(ctx, d)
}

// Acquire tries to acquire the lock until it does (a Lease) or ctx ends
// (nil, nil); a *BadRequestError ends it too. Each attempt reads the
// variable first and acquires only when the read shows no lock (a
// variable without a lock takes no item writes: what was read is what
// the last holder left), with the items Items makes of what it holds.
// While another holds the lock, it waits for it to go (waitRelease),
// trying again at least every lock delay; a failing request is retried
// with backoff (nomad.DefaultBackoff, nomad.RefusedBackoff when refused).
func (c *Contender) Acquire(ctx context.Context) (*Lease, error) {
	var w waiter
	attempt, failing := 0, false
	for {
		var nl nomad.Lease
		sent := c.now()
		v, found, err := c.Lock.Read(ctx, 0, 0)
		if err == nil && found && v.LockID != "" {
			err = nomad.ErrLockHeld // no acquire while the read shows a holder: it could only be refused
		}
		if err == nil {
			items := v.Items
			if c.Items != nil {
				items = c.Items(v.Items)
			}
			sent = c.now()
			nl, err = c.Lock.Acquire(ctx, c.TTL, c.LockDelay, items)
		}
		if errors.Is(err, nomad.ErrLockHeld) && found {
			// Held: the read shows the lock or, as Nomad hides a lock from
			// every token but a management one (recorded from Nomad 2.0.5
			// with a workload identity), the acquire was refused. Either
			// way the items read are what its holder's acquire wrote.
			w.index, w.lockID, w.items = v.ModifyIndex, v.LockID, v.Items
			if c.Held != nil {
				c.Held(v)
			}
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		var he *nomad.HTTPError
		switch {
		case err == nil, errors.Is(err, nomad.ErrLockHeld):
			if failing && c.Working != nil {
				c.Working()
			}
			attempt, failing = 0, false
			if err == nil {
				return newLease(c.Lock, nl, c.TTL, sent, c.now, c.logger()), nil
			}
			if c.waitRelease(ctx, &w) != nil {
				return nil, nil
			}
			continue
		case errors.As(err, &he) && he.Status == http.StatusBadRequest:
			return nil, &BadRequestError{fmt.Errorf("acquiring the lock %s: refused as a bad request: %w", c.Lock.Path(), err)}
		}
		refused := errors.As(err, &he) && (he.Status == http.StatusUnauthorized || he.Status == http.StatusForbidden)
		attempt++
		failing = true
		policy := nomad.DefaultBackoff
		if refused {
			policy = nomad.RefusedBackoff
		}
		jitter := rand.Float64
		if c.Rand != nil {
			jitter = c.Rand
		}
		delay := policy.Delay(attempt, jitter())
		if c.Failed != nil {
			c.Failed(err, refused, attempt, delay)
		}
		if c.sleep(ctx, delay) != nil {
			return nil, nil
		}
	}
}

func (c *Contender) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.New(slog.DiscardHandler)
}

// waiter is a contender's view of the lock's variable.
type waiter struct {
	index  uint64            // the ModifyIndex last seen
	lockID string            // the lock the last read showed; "" none or hidden
	items  map[string]string // the items the last read showed
}

// waitRelease waits, up to the lock delay, for the lock to go. Blocking
// reads answer when the variable changes. Without ACLs (and to a
// management token) Nomad shows the lock: a change showing it gone ends
// the wait at once. With ACLs it hides the lock from every other token (a
// workload identity included, recorded from Nomad 2.0.5): a change that
// keeps the items (a release, a lapse) ends the wait, one that changes
// them (a new holder's acquire, the holder's writes) is reported to Held,
// as is a change the shown lock makes to another holder.
func (c *Contender) waitRelease(ctx context.Context, w *waiter) error {
	until := c.now().Add(c.LockDelay)
	for {
		left := until.Sub(c.now())
		if left <= 0 {
			return nil
		}
		v, found, err := c.Lock.Read(ctx, w.index, left)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			return c.sleep(ctx, left)
		case !found:
			return nil
		}
		changed := v.ModifyIndex != w.index
		var freed, moved bool
		switch {
		case !changed:
		case v.LockID != "": // shown: another holder, or the same one's write
			moved = v.LockID != w.lockID
		case w.lockID != "": // shown before, gone now
			freed = true
		case maps.Equal(v.Items, w.items):
			// Hidden: a release or a lapse moves the index and keeps the
			// items (recorded), where a holder's acquire or write changes
			// them; so the same items at a new index is most likely a
			// free lock: try it.
			freed = true
		default:
			moved = true // hidden: a new holder's acquire, or the holder's write
		}
		w.index, w.lockID, w.items = v.ModifyIndex, v.LockID, v.Items
		if freed {
			return nil
		}
		if moved && c.Held != nil {
			c.Held(v)
		}
		if !changed && c.sleep(ctx, min(until.Sub(c.now()), 250*time.Millisecond)) != nil {
			return ctx.Err() // a read that answered early without a change: not in a tight loop
		}
	}
}
