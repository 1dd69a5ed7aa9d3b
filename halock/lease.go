package halock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// LostError is the lock lost: its holder must stop what only the holder
// may do; another may take over.
type LostError struct{ Reason error }

func (e *LostError) Error() string { return "lost the HA lock: " + e.Reason.Error() }
func (e *LostError) Unwrap() error { return e.Reason }

// Lease keeps a held lock. It renews it every third of its TTL and counts
// it lost when Nomad refuses a renewal, or when no renewal succeeded within
// the TTL since the last one was sent. Nomad keeps a lock for twice its TTL
// after its last renewal, then for the lock delay, before anyone else may
// take it: a holder that stops at one TTL stops at least a TTL and the
// delay before another can start, whatever the network did.
//
// The TTL is the shorter of the one asked and the one Nomad last reported:
// Nomad 2.0.5 resets it to its default (15 s) when the holder writes the
// items, so a holder that asked for more renews on Nomad's.
type Lease struct {
	lock  *nomad.VarLock
	id    string
	asked time.Duration
	now   func() time.Time
	log   *slog.Logger

	mu       sync.Mutex
	ttl      time.Duration
	deadline time.Time // held until then
	err      error     // why it was lost; nil while held
	lost     chan struct{}
}

func newLease(lock *nomad.VarLock, l nomad.Lease, asked time.Duration, sent time.Time, now func() time.Time, log *slog.Logger) *Lease {
	ls := &Lease{lock: lock, id: l.ID, asked: asked, now: now, log: log, lost: make(chan struct{})}
	ls.renewed(l, sent)
	return ls
}

// Held returns nil while the lock is held, else a *LostError.
func (l *Lease) Held() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil && !l.now().Before(l.deadline) {
		l.loseLocked(fmt.Errorf("no renewal succeeded within the lock's TTL (%s)", l.ttl))
	}
	return l.err
}

// Lose marks the lock lost (the first reason stays).
func (l *Lease) Lose(reason error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loseLocked(reason)
}

func (l *Lease) loseLocked(reason error) {
	if l.err == nil {
		l.err = &LostError{reason}
		close(l.lost)
	}
}

// renewed records Nomad's answer to an acquire or a renewal sent at sent.
func (l *Lease) renewed(nl nomad.Lease, sent time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ttl = l.asked
	if nl.TTL > 0 && nl.TTL < l.ttl {
		l.ttl = nl.TTL
	}
	if l.err == nil {
		l.deadline = sent.Add(l.ttl)
	}
}

// Reported takes the TTL a write's answer reported: it shortens the next
// renewals, not the current deadline (the timer Nomad runs now is the one
// the last renewal set).
func (l *Lease) Reported(ttl time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ttl > 0 && ttl < l.ttl {
		l.ttl = ttl
	}
}

// ID is the lock's ID, which the holder's writes name.
func (l *Lease) ID() string { return l.id }

// Path is the lock's variable path.
func (l *Lease) Path() string { return l.lock.Path() }

func (l *Lease) timing() (ttl time.Duration, deadline time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ttl, l.deadline
}

// Renew renews once. A refusal loses the lock; another failure is returned
// and the lock stays held until its deadline.
func (l *Lease) Renew(ctx context.Context) error {
	_, deadline := l.timing()
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	sent := l.now()
	nl, err := l.lock.Renew(ctx, l.id)
	var nh *nomad.NotHolderError
	switch {
	case errors.As(err, &nh):
		l.Lose(fmt.Errorf("renewal refused: %w", err))
		return l.Held()
	case err != nil:
		return fmt.Errorf("renewing the HA lock: %w", err)
	}
	l.renewed(nl, sent)
	return nil
}

// Keep renews the lock until ctx ends or the lock is lost: every third of
// the TTL, and after a failed renewal every tenth (at least 100 ms). The
// first failure of a series is a WARN line, the next ones DEBUG; a success
// after failures is an INFO line.
func (l *Lease) Keep(ctx context.Context) {
	failing := false
	for {
		ttl, deadline := l.timing()
		next := ttl / 3
		if failing {
			next = max(ttl/10, 100*time.Millisecond)
		}
		renewT := time.NewTimer(next)
		deadT := time.NewTimer(deadline.Sub(l.now()))
		select {
		case <-ctx.Done():
		case <-l.lost:
		case <-deadT.C:
			l.Held() // loses it, unless a renewal just moved the deadline
		case <-renewT.C:
			err := l.Renew(ctx)
			switch {
			case err == nil && failing:
				l.log.Info("HA lock renewed again")
			case err != nil && ctx.Err() == nil && l.Held() == nil:
				level := slog.LevelDebug
				if !failing {
					level = slog.LevelWarn
				}
				l.log.Log(ctx, level, "HA lock renewal failed; retrying, and stopping if none succeeds before the deadline",
					"error", err.Error(), "deadline", deadline.Format(time.RFC3339Nano))
			}
			failing = err != nil
		}
		renewT.Stop()
		deadT.Stop()
		if ctx.Err() != nil || l.Held() != nil {
			return
		}
	}
}

// Lost is closed when the lock is lost.
func (l *Lease) Lost() <-chan struct{} { return l.lost }
