package nomad

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// VarLock is a lock on one Nomad variable (/v1/var/:path, Nomad ≥ 1.7),
// and the items its holder keeps in it. Each method is one request, bounded
// by CallTimeout (a blocking read by its wait on top), and never retried
// here: whether a failed lock operation may be repeated depends on what the
// caller knows, so the caller retries.
//
// What Nomad does with a lock (docs/eventlog.md has the whole list, from
// the answers recorded from Nomad 2.0.5): an acquire while another holds it
// is a 409; the holder renews it within its TTL, and Nomad lets it lapse
// only after about twice the TTL, then keeps it for the lock delay before
// anyone else may take it; only the holder may write the items, naming the
// lock's ID, and such a write resets the lock's TTL and delay to Nomad's
// defaults (15 s), which is why every answer's TTL is reported back.
type VarLock struct {
	c         *Client
	path      string
	namespace string
	// CallTimeout bounds each request (default 10 s).
	CallTimeout time.Duration
}

// validVarPath is what Nomad accepts as a variable path.
var validVarPath = regexp.MustCompile(`^[a-zA-Z0-9\-_~/]{1,128}$`)

// VarLock returns the lock on the variable at path in namespace ("" is
// Nomad's default namespace). It checks the path as Nomad would.
func (c *Client) VarLock(path, namespace string) (*VarLock, error) {
	path = strings.Trim(path, "/")
	switch {
	case !validVarPath.MatchString(path):
		return nil, fmt.Errorf("variable path %q: want 1 to 128 characters of a-z, A-Z, 0-9, -, _, ~ and /, as Nomad requires", path)
	case path == "nomad" || strings.HasPrefix(path, "nomad/") && !strings.HasPrefix(path+"/", "nomad/jobs/"):
		return nil, fmt.Errorf("variable path %q: under nomad/ Nomad takes only nomad/jobs/ and below (e.g. nomad/jobs/eventlog/lock)", path)
	case namespace == "*":
		return nil, errors.New(`variable namespace "*": a variable lives in one namespace`)
	}
	return &VarLock{c: c, path: path, namespace: namespace, CallTimeout: 10 * time.Second}, nil
}

// Path is the variable's path.
func (l *VarLock) Path() string { return l.path }

// Lease is the lock as Nomad last reported it to its holder.
type Lease struct {
	ID        string
	TTL       time.Duration
	LockDelay time.Duration
}

// Variable is the variable as a read or a write returned it.
type Variable struct {
	Items       map[string]string
	ModifyIndex uint64
	// LockID is the ID of the lock the variable holds, when Nomad shows it:
	// with ACLs on, to a management token only; a workload identity, its
	// holder's included, reads no lock (recorded from Nomad 2.0.5). Without
	// ACLs every token sees it.
	LockID string
}

// ErrLockHeld is an acquire refused because the lock is held (or in its
// lock delay).
var ErrLockHeld = errors.New("the lock is held by another holder")

// NotHolderError is a renewal, a write or a release Nomad refused because
// the caller does not hold the lock (any more): it lapsed, was released or
// the variable is gone.
type NotHolderError struct{ Err *HTTPError }

func (e *NotHolderError) Error() string { return "the lock is not held any more: " + e.Err.Error() }
func (e *NotHolderError) Unwrap() error { return e.Err }

// ConflictError is a write Nomad refused with 409: the CAS index was not
// the variable's, or the lock ID not the one it holds; Nomad does not say
// which. Current is the variable as Nomad returned it, when it did.
type ConflictError struct {
	// Current is nil when Nomad answered with an empty variable (the lock
	// ID was not the one the variable holds, or it holds none).
	Current *Variable
}

func (e *ConflictError) Error() string {
	if e.Current != nil {
		return fmt.Sprintf("Nomad refused the write with 409: the variable is at index %d, or the lock is not held", e.Current.ModifyIndex)
	}
	return "Nomad refused the write with 409: the lock is not held"
}

func lease(l *api.VariableLock) (Lease, error) {
	if l == nil || l.ID == "" {
		return Lease{}, errors.New("the answer holds no lock")
	}
	ttl, err := time.ParseDuration(l.TTL)
	if err != nil {
		return Lease{}, fmt.Errorf("the answer's lock TTL %q: %w", l.TTL, err)
	}
	delay, err := time.ParseDuration(l.LockDelay)
	if err != nil {
		return Lease{}, fmt.Errorf("the answer's lock delay %q: %w", l.LockDelay, err)
	}
	return Lease{ID: l.ID, TTL: ttl, LockDelay: delay}, nil
}

func variable(v *api.Variable) Variable {
	out := Variable{Items: v.Items, ModifyIndex: v.ModifyIndex}
	if v.Lock != nil {
		out.LockID = v.Lock.ID
	}
	return out
}

// Acquire takes the lock with ttl and delay (Nomad's defaults when zero).
// Nomad writes the variable from the acquire's body: an acquire without
// items leaves the variable with none (recorded from Nomad 2.0.5), so
// items must be what the variable holds, read before, for them to
// survive. It returns ErrLockHeld while another holds the lock.
func (l *VarLock) Acquire(ctx context.Context, ttl, delay time.Duration, items map[string]string) (Lease, error) {
	lk := &api.VariableLock{}
	if ttl > 0 {
		lk.TTL = ttl.String()
	}
	if delay > 0 {
		lk.LockDelay = delay.String()
	}
	ctx, cancel := context.WithTimeout(ctx, l.CallTimeout)
	defer cancel()
	v, _, err := l.c.api.Variables().AcquireLock(l.variable(items, lk), l.write(ctx))
	switch err = Err(err); {
	case status(err) == http.StatusConflict:
		return Lease{}, ErrLockHeld
	case err != nil:
		return Lease{}, l.errorf("acquiring", err)
	}
	return lease(v.Lock)
}

// Renew extends the lock's lease; the answer's TTL is the one Nomad holds
// now. A *NotHolderError says the lock is lost.
func (l *VarLock) Renew(ctx context.Context, id string) (Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, l.CallTimeout)
	defer cancel()
	m, _, err := l.c.api.Variables().RenewLock(l.variable(nil, &api.VariableLock{ID: id}), l.write(ctx))
	if err := l.holderError("renewing", err); err != nil {
		return Lease{}, err
	}
	return lease(m.Lock)
}

// Release lets the lock go, at once; the items stay. A *NotHolderError says
// it was not held any more.
func (l *VarLock) Release(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, l.CallTimeout)
	defer cancel()
	_, _, err := l.c.api.Variables().ReleaseLock(l.variable(nil, &api.VariableLock{ID: id}), l.write(ctx))
	return l.holderError("releasing", err)
}

// holderError is err of an operation only the holder may do: a 409 or 404
// is a *NotHolderError.
func (l *VarLock) holderError(op string, err error) error {
	err = Err(err)
	var he *HTTPError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &he) && (he.Status == http.StatusConflict || he.Status == http.StatusNotFound):
		return &NotHolderError{he}
	}
	return l.errorf(op, err)
}

// Write replaces the items as the lock's holder, if the variable is still
// at index cas. It returns the variable's new index and the lease as Nomad
// holds it after the write (its TTL reset to Nomad's default). A 409 is a
// *ConflictError.
func (l *VarLock) Write(ctx context.Context, id string, cas uint64, items map[string]string) (uint64, Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, l.CallTimeout)
	defer cancel()
	in := l.variable(items, &api.VariableLock{ID: id})
	in.ModifyIndex = cas
	v, _, err := l.c.api.Variables().CheckedUpdate(in, l.write(ctx))
	var ce api.ErrCASConflict
	switch {
	case errors.As(err, &ce):
		out := &ConflictError{}
		if ce.Conflict != nil && ce.Conflict.ModifyIndex != 0 {
			cur := variable(ce.Conflict)
			out.Current = &cur
		}
		return 0, Lease{}, out
	case err != nil:
		return 0, Lease{}, l.errorf("writing", Err(err))
	}
	ls, err := lease(v.Lock)
	return v.ModifyIndex, ls, err
}

// Read returns the variable; found is false when it does not exist. With
// index > 0 it is a blocking read: Nomad answers once the variable's index
// has passed index, or after wait.
func (l *VarLock) Read(ctx context.Context, index uint64, wait time.Duration) (v Variable, found bool, err error) {
	timeout := l.CallTimeout
	q := &api.QueryOptions{Namespace: l.namespace}
	if index > 0 {
		q.WaitIndex, q.WaitTime = index, wait
		timeout += wait
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got, _, err := l.c.api.Variables().Peek(l.path, q.WithContext(ctx))
	switch {
	case err != nil:
		return Variable{}, false, l.errorf("reading", Err(err))
	case got == nil:
		return Variable{}, false, nil
	}
	return variable(got), true, nil
}

// variable is the request body for the variable with items and lock.
func (l *VarLock) variable(items map[string]string, lk *api.VariableLock) *api.Variable {
	return &api.Variable{Namespace: l.namespace, Path: l.path, Items: items, Lock: lk}
}

// write is the write options of one request.
func (l *VarLock) write(ctx context.Context) *api.WriteOptions {
	return (&api.WriteOptions{Namespace: l.namespace}).WithContext(ctx)
}

func (l *VarLock) errorf(op string, err error) error {
	return fmt.Errorf("%s variable %s: %w", op, l.path, err)
}

// status is the HTTP status of an *HTTPError in err, 0 otherwise.
func status(err error) int {
	var he *HTTPError
	if errors.As(err, &he) {
		return he.Status
	}
	return 0
}
