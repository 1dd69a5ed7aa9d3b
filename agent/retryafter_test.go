package agent

import (
	"errors"
	"fmt"
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
