package agent

import (
	"errors"
	"log/slog"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// retryAfter returns the longest wait a registry asked for in err (a 429's
// Retry-After), or zero.
func retryAfter(err error) time.Duration {
	var longest time.Duration
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		var rl *registry.RateLimitedError
		if errors.As(err, &rl) {
			longest = max(longest, rl.RetryAfter)
		}
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range joined.Unwrap() {
				walk(e)
			}
		}
	}
	walk(err)
	return longest
}

// failureLog throttles what is logged about one image that keeps failing:
// the first failure and a changed error at ERROR, a reminder at ERROR each
// time the failure has lasted another alertAfter, and repeats in between at
// DEBUG, so a log shipper can alert on ERROR without being flooded (the
// 750-emails-over-a-weekend lesson). The caller passes the clock.
type failureLog struct {
	since     time.Time
	lastErr   string
	attempts  int
	reminders int
}

// failed records a failure at now and returns the level to log it at and
// why that level.
func (f *failureLog) failed(now time.Time, err string, alertAfter time.Duration) (slog.Level, string) {
	f.attempts++
	switch {
	case f.attempts == 1:
		f.since, f.lastErr = now, err
		return slog.LevelError, "first failure"
	case err != f.lastErr:
		f.lastErr = err
		return slog.LevelError, "the error changed"
	}
	if alertAfter > 0 {
		if n := int(now.Sub(f.since) / alertAfter); n > f.reminders {
			f.reminders = n
			return slog.LevelError, "still failing"
		}
	}
	return slog.LevelDebug, "the same error again"
}

// recovered ends a run of failures at now; ok is false when there was none.
func (f *failureLog) recovered(now time.Time) (attempts int, downtime time.Duration, ok bool) {
	if f.attempts == 0 {
		return 0, 0, false
	}
	attempts, downtime = f.attempts, now.Sub(f.since)
	*f = failureLog{}
	return attempts, downtime, true
}
