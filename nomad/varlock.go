package nomad

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
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
	// it hides it from an ACL token without management rights (a workload
	// identity, and a cluster without ACLs, see it).
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
	Current *Variable
	Body    string
}

func (e *ConflictError) Error() string {
	if e.Current != nil {
		return fmt.Sprintf("Nomad refused the write with 409: the variable is at index %d, or the lock is not held", e.Current.ModifyIndex)
	}
	return "Nomad refused the write with 409: " + e.Body
}

// varJSON is a variable as Nomad's API encodes it.
type varJSON struct {
	Namespace   string            `json:",omitempty"`
	Path        string            `json:",omitempty"`
	Items       map[string]string `json:",omitempty"`
	Lock        *lockJSON         `json:",omitempty"`
	ModifyIndex uint64            `json:",omitempty"`
}

type lockJSON struct {
	ID        string `json:",omitempty"`
	TTL       string `json:",omitempty"`
	LockDelay string `json:",omitempty"`
}

func (v varJSON) variable() Variable {
	out := Variable{Items: v.Items, ModifyIndex: v.ModifyIndex}
	if v.Lock != nil {
		out.LockID = v.Lock.ID
	}
	return out
}

func (v varJSON) lease() (Lease, error) {
	if v.Lock == nil || v.Lock.ID == "" {
		return Lease{}, errors.New("the answer holds no lock")
	}
	ttl, err := time.ParseDuration(v.Lock.TTL)
	if err != nil {
		return Lease{}, fmt.Errorf("the answer's lock TTL %q: %w", v.Lock.TTL, err)
	}
	delay, err := time.ParseDuration(v.Lock.LockDelay)
	if err != nil {
		return Lease{}, fmt.Errorf("the answer's lock delay %q: %w", v.Lock.LockDelay, err)
	}
	return Lease{ID: v.Lock.ID, TTL: ttl, LockDelay: delay}, nil
}

// Acquire takes the lock with ttl and delay (Nomad's defaults when zero),
// leaving the variable's items as they are. It returns ErrLockHeld while
// another holds it.
func (l *VarLock) Acquire(ctx context.Context, ttl, delay time.Duration) (Lease, error) {
	lk := &lockJSON{}
	if ttl > 0 {
		lk.TTL = ttl.String()
	}
	if delay > 0 {
		lk.LockDelay = delay.String()
	}
	v, status, body, err := l.put(ctx, url.Values{"lock-acquire": {""}}, varJSON{Lock: lk})
	switch {
	case err != nil:
		return Lease{}, err
	case status == http.StatusConflict:
		return Lease{}, ErrLockHeld
	case status != http.StatusOK:
		return Lease{}, &HTTPError{Status: status, Body: body}
	}
	return v.lease()
}

// Renew extends the lock's lease; the answer's TTL is the one Nomad holds
// now. A *NotHolderError says the lock is lost.
func (l *VarLock) Renew(ctx context.Context, id string) (Lease, error) {
	v, status, body, err := l.put(ctx, url.Values{"lock-renew": {""}}, varJSON{Lock: &lockJSON{ID: id}})
	if err := holderStatus(status, body, err); err != nil {
		return Lease{}, err
	}
	return v.lease()
}

// Release lets the lock go, at once. A *NotHolderError says it was not
// held any more.
func (l *VarLock) Release(ctx context.Context, id string) error {
	_, status, body, err := l.put(ctx, url.Values{"lock-release": {""}}, varJSON{Lock: &lockJSON{ID: id}})
	return holderStatus(status, body, err)
}

func holderStatus(status int, body string, err error) error {
	switch {
	case err != nil:
		return err
	case status == http.StatusConflict, status == http.StatusNotFound:
		return &NotHolderError{&HTTPError{Status: status, Body: body}}
	case status != http.StatusOK:
		return &HTTPError{Status: status, Body: body}
	}
	return nil
}

// Write replaces the items as the lock's holder, if the variable is still
// at index cas. It returns the variable's new index and the lease as Nomad
// holds it after the write (its TTL reset to Nomad's default). A 409 is a
// *ConflictError.
func (l *VarLock) Write(ctx context.Context, id string, cas uint64, items map[string]string) (uint64, Lease, error) {
	q := url.Values{"cas": {strconv.FormatUint(cas, 10)}}
	v, status, body, err := l.put(ctx, q, varJSON{Items: items, Lock: &lockJSON{ID: id}})
	switch {
	case err != nil:
		return 0, Lease{}, err
	case status == http.StatusConflict:
		ce := &ConflictError{Body: body}
		if v.Path != "" {
			cur := v.variable()
			ce.Current = &cur
		}
		return 0, Lease{}, ce
	case status != http.StatusOK:
		return 0, Lease{}, &HTTPError{Status: status, Body: body}
	}
	lease, err := v.lease()
	return v.ModifyIndex, lease, err
}

// Read returns the variable; found is false when it does not exist. With
// index > 0 it is a blocking read: Nomad answers once the variable's index
// has passed index, or after wait.
func (l *VarLock) Read(ctx context.Context, index uint64, wait time.Duration) (v Variable, found bool, err error) {
	q := url.Values{}
	timeout := l.CallTimeout
	if index > 0 {
		q.Set("index", strconv.FormatUint(index, 10))
		q.Set("wait", wait.String())
		timeout += wait
	}
	resp, body, err := l.call(ctx, timeout, http.MethodGet, q, nil)
	switch {
	case err != nil:
		return Variable{}, false, err
	case resp.StatusCode == http.StatusNotFound:
		return Variable{}, false, nil
	case resp.StatusCode != http.StatusOK:
		return Variable{}, false, &HTTPError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	var vj varJSON
	if err := json.Unmarshal(body, &vj); err != nil {
		return Variable{}, false, fmt.Errorf("reading variable %s: %w", l.path, err)
	}
	return vj.variable(), true, nil
}

// put sends a PUT with the variable v; the answer's body is decoded when it
// is a variable.
func (l *VarLock) put(ctx context.Context, q url.Values, v varJSON) (varJSON, int, string, error) {
	v.Namespace, v.Path = l.namespace, l.path
	b, err := json.Marshal(v)
	if err != nil {
		return varJSON{}, 0, "", err
	}
	resp, body, err := l.call(ctx, l.CallTimeout, http.MethodPut, q, bytes.NewReader(b))
	if err != nil {
		return varJSON{}, 0, "", err
	}
	var out varJSON
	if json.Unmarshal(body, &out) != nil {
		out = varJSON{}
	}
	return out, resp.StatusCode, strings.TrimSpace(string(body)), nil
}

// call sends one request, bounded by timeout, and reads the answer (a
// variable holds 64 KiB at most).
func (l *VarLock) call(ctx context.Context, timeout time.Duration, method string, q url.Values, body io.Reader) (*http.Response, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if l.namespace != "" {
		q.Set("namespace", l.namespace)
	}
	resp, err := l.c.do(ctx, method, "/v1/var/"+l.path, q, body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s variable %s: %w", strings.ToLower(method), l.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s variable %s: reading the answer: %w", strings.ToLower(method), l.path, err)
	}
	return resp, b, nil
}
