package identity

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// AllocationSource answers an allocation's statuses: nomad.Client's
// AllocationStatus.
type AllocationSource interface {
	AllocationStatus(ctx context.Context, id string) (desired, client string, err error)
}

// Allocations checks that a token's allocation still runs. Nomad's own API
// refuses a stopped allocation's identities at once (recorded from Nomad
// 2.0.5), while a signature stays good until the token expires (an hour for
// the relay's identity): with Allocations set, a Verifier refuses them too.
//
// It asks Nomad once per allocation and keeps the answer: a running one is
// taken without asking again for Fresh, a stopped or unknown one is refused
// from then on. Only tokens whose signature and claims verified are asked
// about, so the allocations kept are real ones of the job; they are bounded
// all the same (MaxKept, then the memory starts again empty). One ask has
// Timeout; a failed one makes the token unavailable (503), not refused, and
// is not kept.
type Allocations struct {
	Nomad   AllocationSource
	Timeout time.Duration    // one ask; 0 is 5 s
	Fresh   time.Duration    // a running allocation taken without asking again; 0 is 1 min
	Now     func() time.Time // the clock; nil is time.Now

	mu   sync.Mutex
	kept map[string]allocSeen
}

// MaxKept bounds the allocations an Allocations remembers.
const MaxKept = 20000

type allocSeen struct {
	running bool
	at      time.Time
}

// ReasonStopped is a token whose allocation no longer runs, or that Nomad
// does not know.
const ReasonStopped Reason = "its allocation is not running"

func (a *Allocations) now() time.Time {
	if a.Now != nil {
		return a.Now()
	}
	return time.Now()
}

// check returns nil when allocation id runs (pending or running, and meant
// to run), a *RefusedError when it does not or Nomad does not know it, an
// *UnavailableError when Nomad could not say.
func (a *Allocations) check(ctx context.Context, id string) error {
	if id == "" {
		return refused(ReasonStopped, "the token names no allocation")
	}
	fresh := a.Fresh
	if fresh <= 0 {
		fresh = time.Minute
	}
	a.mu.Lock()
	seen, ok := a.kept[id]
	a.mu.Unlock()
	if ok && !seen.running {
		return refused(ReasonStopped, "allocation %s", quote(id))
	}
	if ok && a.now().Sub(seen.at) < fresh {
		return nil
	}
	timeout := a.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	desired, client, err := a.Nomad.AllocationStatus(actx, id)
	var h *nomad.HTTPError
	switch {
	case errors.As(err, &h) && h.Status == http.StatusNotFound:
		a.keep(id, false)
		return refused(ReasonStopped, "allocation %s: unknown to Nomad", quote(id))
	case err != nil:
		return &UnavailableError{What: "Nomad can't say whether its allocation runs", Err: err}
	case desired == "run" && (client == "pending" || client == "running"):
		a.keep(id, true)
		return nil
	}
	a.keep(id, false)
	return refused(ReasonStopped, "allocation %s: desired %s, client %s", quote(id), quote(desired), quote(client))
}

func (a *Allocations) keep(id string, running bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.kept == nil || len(a.kept) >= MaxKept {
		a.kept = map[string]allocSeen{}
	}
	a.kept[id] = allocSeen{running: running, at: a.now()}
}
