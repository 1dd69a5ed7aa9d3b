// Package backoff owns the retry schedule both programs use: capped
// exponential backoff with jitter, as a pure function of the attempt number
// and a random draw, so every schedule is table-tested without a clock.
// prefetch's per-image retries and eventlog's reconnects share it, and
// Sleep, the one wait between attempts.
// It imports nothing of the project's.
package backoff

import (
	"context"
	"time"
)

// Policy is a capped exponential backoff with jitter.
type Policy struct {
	Min, Max time.Duration
	// Jitter is the fraction of each delay drawn at random: 0.5 gives delays
	// between half and all of the exponential value.
	Jitter float64
}

// Delay returns the wait before retry number attempt (1 for the first retry):
// Min, doubling, capped at Max, less up to Jitter of it; rnd is a random
// number in [0, 1).
func (p Policy) Delay(attempt int, rnd float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := p.Min
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	if p.Jitter > 0 {
		d -= time.Duration(float64(d) * p.Jitter * rnd)
	}
	return d
}

// Sleep waits d, or until ctx is done (returning its error): the wait
// between two attempts, where tests inject their own.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
