package nomad

import "time"

// Backoff is a capped exponential backoff with jitter.
type Backoff struct {
	Min, Max time.Duration
	// Jitter is the fraction of each delay drawn at random: 0.5 gives delays
	// between half and all of the exponential value.
	Jitter float64
}

// Delay returns the wait before retry number attempt (1 for the first retry);
// rnd is a random number in [0, 1).
func (b Backoff) Delay(attempt int, rnd float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := b.Min
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max {
		d = b.Max
	}
	if b.Jitter > 0 {
		d -= time.Duration(float64(d) * b.Jitter * rnd)
	}
	return d
}

// DefaultBackoff is used after a dropped or failed connection.
var DefaultBackoff = Backoff{Min: 250 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.5}

// RefusedBackoff is used when Nomad refused the subscription (bad token,
// missing ACL policy, disabled event broker): retrying soon will not help.
var RefusedBackoff = Backoff{Min: 10 * time.Second, Max: 5 * time.Minute, Jitter: 0.5}
