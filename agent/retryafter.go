package agent

import (
	"errors"
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
