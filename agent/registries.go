package agent

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"
)

// UnresponsiveError says a registry accepted the agent's (or dockerd's)
// connection and then did not answer in time. The same error is returned
// for the call that found it out and for every reference on that registry
// skipped afterwards, so that an image's error does not change from one
// attempt to the next while the outage lasts (which would log it again).
type UnresponsiveError struct {
	Host  string
	Since time.Time
	Why   string // what did not answer, and for how long
}

func (e *UnresponsiveError) Error() string {
	return fmt.Sprintf("registry %s is not answering (%s) since %s; it is asked again alone, with backoff, and skipped meanwhile",
		e.Host, e.Why, e.Since.UTC().Format(time.RFC3339))
}

// unresponsive remembers which registry hosts stopped answering, so that one
// hung registry costs one caller a timeout, not every image that uses it:
// while a host is marked, references on it are skipped at once (a pull falls
// through to the next source), and only one call at a time, on a backoff
// schedule, probes whether it answers again. A host is marked only by a
// call that timed out; any answer, even an error, clears it.
type unresponsive struct {
	policy backoff.Policy

	mu    sync.Mutex
	hosts map[string]*hostState
}

type hostState struct {
	err     UnresponsiveError
	fails   int
	retryAt time.Time
	probing bool
}

func newUnresponsive() *unresponsive {
	return &unresponsive{
		policy: backoff.Policy{Min: 15 * time.Second, Max: 5 * time.Minute, Jitter: 0.2},
		hosts:  map[string]*hostState{},
	}
}

// admit says whether host may be asked now. When it may not, err is the
// host's *UnresponsiveError. probe is true when the call admitted is the one
// probing a marked host: it must report back with done.
func (u *unresponsive) admit(host string, now time.Time) (probe bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.hosts[host]
	switch {
	case st == nil:
		return false, nil
	case st.probing || now.Before(st.retryAt):
		e := st.err
		return false, &e
	}
	st.probing = true
	return true, nil
}

// outcome is what asking a host came to.
type outcome int

const (
	answered outcome = iota // any answer, success or error: the host is alive
	timedOut                // no answer in time: the host is marked
	unknown                 // the caller gave up (cancelled): nothing learnt
)

// done records the outcome of a call to host admitted by admit; why says,
// for timedOut, what did not answer. For timedOut it returns the host's
// *UnresponsiveError, to be reported in place of the call's own error.
func (u *unresponsive) done(host string, probe bool, o outcome, why string, now time.Time) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	st := u.hosts[host]
	switch o {
	case answered:
		delete(u.hosts, host)
		return nil
	case timedOut:
		if st == nil {
			st = &hostState{err: UnresponsiveError{Host: host, Since: now, Why: why}}
			u.hosts[host] = st
		}
		st.fails++
		st.retryAt = now.Add(u.policy.Delay(st.fails, rand.Float64()))
		if probe {
			st.probing = false
		}
		e := st.err
		return &e
	}
	if probe && st != nil {
		st.probing = false
	}
	return nil
}

// refLocks serialises the fetches of one reference: a pull and the inspect
// that reads what it brought must not interleave with another pull of the
// same tag (two images sharing a source for different platforms would tag
// each other's architecture). Waiting honours the caller's context.
type refLocks struct {
	mu sync.Mutex
	m  map[string]*refLock
}

type refLock struct {
	ch    chan struct{}
	users int
}

// lock takes ref's lock; unlock releases it.
func (l *refLocks) lock(ctx context.Context, ref string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*refLock{}
	}
	rl := l.m[ref]
	if rl == nil {
		rl = &refLock{ch: make(chan struct{}, 1)}
		l.m[ref] = rl
	}
	rl.users++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		if rl.users--; rl.users == 0 {
			delete(l.m, ref)
		}
		l.mu.Unlock()
	}
	select {
	case rl.ch <- struct{}{}:
		return func() { <-rl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("waiting for another pull of %s: %w", ref, context.Cause(ctx))
	}
}

// shared is what the fetches of one process share.
type shared struct {
	lookups *unresponsive // the agent's own manifest HEADs, by registry host
	pulls   *unresponsive // dockerd's pulls, by registry host
	refs    refLocks
}

func newShared() *shared {
	return &shared{lookups: newUnresponsive(), pulls: newUnresponsive()}
}
