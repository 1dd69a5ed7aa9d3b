package nomad

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

const lockPath = "nomad/jobs/eventlog/lock"

func varLock(t *testing.T, url, token string) *VarLock {
	t.Helper()
	c, err := NewClient(&api.Config{Address: url, SecretID: token}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.VarLock(lockPath, "")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestVarLockPath(t *testing.T) {
	t.Parallel()
	c, err := NewClient(&api.Config{Address: "http://127.0.0.1:1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, ns string
		err      string
	}{
		{"nomad/jobs/eventlog/lock", "", ""},
		{"/eventlog/lock/", "prod", ""},
		{"", "", "want 1 to 128 characters"},
		{"event log", "", "want 1 to 128 characters"},
		{strings.Repeat("a", 129), "", "want 1 to 128 characters"},
		{"nomad/eventlog", "", "only nomad/jobs/ and below"},
		{"nomad", "", "only nomad/jobs/ and below"},
		{"eventlog/lock", "*", "lives in one namespace"},
	}
	for _, tt := range tests {
		_, err := c.VarLock(tt.path, tt.ns)
		if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("VarLock(%q, %q): got %v, want %q", tt.path, tt.ns, err, tt.err)
		}
	}
}

// Every operation against Nomad's recorded behaviour (the test server): the
// lease as Nomad reports it, a held lock, the holder's CAS writes and the
// TTL they reset, conflicts, the release, and a lost lock.
func TestVarLockOperations(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	ctx := context.Background()
	a, b := varLock(t, srv.URL, "a"), varLock(t, srv.URL, "b")

	if _, found, err := a.Read(ctx, 0, 0); found || err != nil {
		t.Fatalf("read before any acquire: found %v, %v; want not found", found, err)
	}
	lease, err := a.Acquire(ctx, 40*time.Second, 5*time.Second, nil)
	if err != nil || lease.ID == "" || lease.TTL != 40*time.Second || lease.LockDelay != 5*time.Second {
		t.Fatalf("acquire: got %+v, %v; want a lease of 40s, delay 5s", lease, err)
	}
	if _, err := b.Acquire(ctx, 40*time.Second, 5*time.Second, nil); !errors.Is(err, ErrLockHeld) {
		t.Errorf("acquire while held: got %v, want ErrLockHeld", err)
	}
	v, found, err := a.Read(ctx, 0, 0)
	if !found || err != nil || v.LockID != lease.ID || len(v.Items) != 0 {
		t.Fatalf("read: got %+v %v %v, want the lock and no items", v, found, err)
	}
	idx, after, err := a.Write(ctx, lease.ID, v.ModifyIndex, map[string]string{"index": "42"})
	if err != nil || idx <= v.ModifyIndex || after.TTL != 15*time.Second {
		t.Fatalf("holder's write: got index %d, lease %+v, %v; want a new index and the TTL Nomad reset to 15s", idx, after, err)
	}
	var ce *ConflictError
	if _, _, err := a.Write(ctx, lease.ID, v.ModifyIndex, map[string]string{"index": "43"}); !errors.As(err, &ce) || ce.Current == nil || ce.Current.ModifyIndex != idx || ce.Current.Items["index"] != "42" {
		t.Errorf("write with a stale CAS index: got %v, want a conflict showing index %d and the items", err, idx)
	}
	if _, _, err := b.Write(ctx, "not-the-id", idx, map[string]string{"index": "1"}); !errors.As(err, &ce) {
		t.Errorf("write by another: got %v, want a conflict", err)
	}
	if got, err := a.Renew(ctx, lease.ID); err != nil || got.TTL != 15*time.Second {
		t.Errorf("renew: got %+v, %v; want the 15s TTL Nomad holds now", got, err)
	}
	var nh *NotHolderError
	if _, err := b.Renew(ctx, "not-the-id"); !errors.As(err, &nh) {
		t.Errorf("renew by another: got %v, want a NotHolderError", err)
	}
	if err := a.Release(ctx, lease.ID); err != nil {
		t.Fatalf("release: %v", err)
	}
	if _, err := a.Renew(ctx, lease.ID); !errors.As(err, &nh) {
		t.Errorf("renew after the release: got %v, want a NotHolderError", err)
	}
	if v, _, _ := b.Read(ctx, 0, 0); v.LockID != "" || v.Items["index"] != "42" {
		t.Errorf("after the release: got %+v, want no lock and the items kept", v)
	}
	if _, err := b.Acquire(ctx, 10*time.Second, 0, nil); err != nil {
		t.Errorf("acquire after the release: %v", err)
	}
	for _, op := range srv.VarOps() {
		if op.Token != "a" && op.Token != "b" {
			t.Errorf("%s went without the caller's token: %+v", op.Op, op)
		}
	}
}

// Nomad's refusal of a TTL below its minimum reaches the caller with
// Nomad's reason.
func TestVarLockTTLRefused(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	_, err := varLock(t, srv.URL, "").Acquire(context.Background(), 2*time.Second, time.Second, nil)
	var he *HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "TTL must be between 10 seconds and 24 hours") {
		t.Errorf("acquire with a 2s TTL: got %v, want Nomad's 400 with its reason", err)
	}
}

// A blocking read answers when the variable changes, here when its holder
// releases the lock.
func TestVarLockBlockingRead(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	ctx := context.Background()
	a, b := varLock(t, srv.URL, "a"), varLock(t, srv.URL, "b")
	lease, err := a.Acquire(ctx, 10*time.Second, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, _, err := b.Read(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan Variable, 1)
	go func() {
		v, _, _ := b.Read(ctx, v.ModifyIndex, time.Minute)
		got <- v
	}()
	if err := a.Release(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case after := <-got:
		if after.ModifyIndex <= v.ModifyIndex || after.LockID != "" {
			t.Errorf("blocking read: got %+v, want the released variable past index %d", after, v.ModifyIndex)
		}
	case <-time.After(hang):
		t.Fatal("the blocking read did not answer the release")
	}
}
