package nomad

import (
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"
)

// DefaultBackoff is used after a dropped or failed connection.
var DefaultBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 30 * time.Second, Jitter: 0.5}

// RefusedBackoff is used when Nomad refused the subscription (bad token,
// missing ACL policy, disabled event broker): retrying soon will not help.
var RefusedBackoff = backoff.Policy{Min: 10 * time.Second, Max: 5 * time.Minute, Jitter: 0.5}
