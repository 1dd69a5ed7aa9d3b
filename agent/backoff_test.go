package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	rl := func(d time.Duration) error { return &registry.RateLimitedError{Ref: "r", RetryAfter: d} }
	for _, tc := range []struct {
		err  error
		want time.Duration
	}{
		{nil, 0},
		{errors.New("x"), 0},
		{fmt.Errorf("expected: %w", rl(7*time.Second)), 7 * time.Second},
		{errors.Join(fmt.Errorf("expected: %w", rl(3*time.Second)), errors.New("y"), fmt.Errorf("source: %w", rl(9*time.Second))), 9 * time.Second},
	} {
		if got := retryAfter(tc.err); got != tc.want {
			t.Errorf("retryAfter(%v): got %s, want %s", tc.err, got, tc.want)
		}
	}
}

func TestFailureLog(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const alertAfter = 6 * time.Hour
	var f failureLog
	steps := []struct {
		at   time.Duration
		err  string
		want slog.Level
	}{
		{0, "refused", slog.LevelError},                // first
		{10 * time.Second, "refused", slog.LevelDebug}, // repeat
		{30 * time.Second, "refused", slog.LevelDebug},
		{time.Minute, "timeout", slog.LevelError}, // changed
		{2 * time.Minute, "timeout", slog.LevelDebug},
		{5*time.Hour + 59*time.Minute, "timeout", slog.LevelDebug},
		{6*time.Hour + time.Minute, "timeout", slog.LevelError}, // reminder
		{6*time.Hour + 11*time.Minute, "timeout", slog.LevelDebug},
		{12*time.Hour + 5*time.Minute, "timeout", slog.LevelError}, // again
		{12*time.Hour + 15*time.Minute, "timeout", slog.LevelDebug},
	}
	for i, s := range steps {
		if got, why := f.failed(t0.Add(s.at), s.err, alertAfter); got != s.want {
			t.Errorf("step %d (%s, %q): got %s (%s), want %s", i, s.at, s.err, got, why, s.want)
		}
	}
	attempts, downtime, ok := f.recovered(t0.Add(13 * time.Hour))
	if !ok || attempts != len(steps) || downtime != 13*time.Hour {
		t.Errorf("recovered: got %d attempts, %s, %v; want %d, 13h, true", attempts, downtime, ok, len(steps))
	}
	if _, _, ok := f.recovered(t0); ok {
		t.Error("recovered twice: got ok, want a reset log")
	}
	if got, _ := f.failed(t0.Add(14*time.Hour), "timeout", alertAfter); got != slog.LevelError {
		t.Errorf("first failure after a recovery: got %s, want ERROR", got)
	}
}
