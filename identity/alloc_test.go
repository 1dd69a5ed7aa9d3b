package identity

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// allocSource answers from a table and counts the asks.
type allocSource struct {
	mu     sync.Mutex
	status map[string][2]string // id: desired, client
	err    error
	asks   int
}

func (s *allocSource) AllocationStatus(_ context.Context, id string) (string, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asks++
	if s.err != nil {
		return "", "", s.err
	}
	st, ok := s.status[id]
	if !ok {
		return "", "", &nomad.HTTPError{Status: http.StatusNotFound, Body: "alloc not found"}
	}
	return st[0], st[1], nil
}

func (s *allocSource) set(id, desired, client string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[id] = [2]string{desired, client}
}

func (s *allocSource) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.asks
}

// An allocation that runs (pending or running, desired run) is taken, and
// not asked about again for Fresh; one stopped, failed or unknown to Nomad
// (404, as Nomad 2.0.5 answers, testdata alloc-get.txt) is refused for good;
// a failed ask is unavailable, and asked again.
func TestAllocationsCheck(t *testing.T) {
	t.Parallel()
	clk := newClock()
	src := &allocSource{status: map[string][2]string{
		"run": {"run", "running"}, "starting": {"run", "pending"},
		"stopped": {"stop", "complete"}, "failed": {"run", "failed"}, "lost": {"stop", "lost"},
	}}
	a := &Allocations{Nomad: src, Now: clk.Now, Fresh: time.Minute}
	ctx := t.Context()
	for _, id := range []string{"run", "starting"} {
		if err := a.check(ctx, id); err != nil {
			t.Errorf("%s: got %v, want it taken", id, err)
		}
	}
	for _, id := range []string{"stopped", "failed", "lost", "gone", ""} {
		refusal(t, a.check(ctx, id), ReasonStopped)
	}
	asked := src.count()
	if asked != 6 { // every one but "" once
		t.Errorf("asked %d times, want 6", asked)
	}

	// Within Fresh nothing is asked again; a refusal stays one.
	src.set("run", "stop", "complete")
	if err := a.check(ctx, "run"); err != nil {
		t.Errorf("run within Fresh: got %v, want it taken as it was", err)
	}
	refusal(t, a.check(ctx, "stopped"), ReasonStopped)
	if got := src.count(); got != asked {
		t.Errorf("asked %d times within Fresh, want %d", got, asked)
	}
	// Past Fresh a running one is asked again, and now refused.
	clk.Add(time.Minute)
	refusal(t, a.check(ctx, "run"), ReasonStopped)

	// Nomad can't say: unavailable, not kept.
	src.mu.Lock()
	src.err = errors.New("connection refused")
	src.mu.Unlock()
	var un *UnavailableError
	for range 2 {
		if err := a.check(ctx, "new"); !errors.As(err, &un) || un.What == "" {
			t.Errorf("Nomad failing: got %v, want an *UnavailableError naming what", err)
		}
	}
	if got := src.count(); got != asked+3 {
		t.Errorf("asked %d times, want %d (run once more, new twice)", got, asked+3)
	}
}

// A Verifier with Allocations refuses a relay identity whose allocation
// Nomad has stopped (the fake answers GET /v1/allocation/:id as recorded),
// which its signature alone would let in until it expires.
func TestVerifyRefusesAStoppedAllocation(t *testing.T) {
	t.Parallel()
	f := setup(t)
	c, err := nomad.NewClient(&api.Config{Address: f.nomad.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v := *f.v
	v.Allocations = &Allocations{Nomad: c, Now: f.clock.Now}
	tok := f.issue(func(id *nomadtest.Identity) { id.AllocationID = "5f4e7e1c-0d0f-4c4e-9d0b-9a8f1c1e2d3a" })
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("running allocation: %v", err)
	}
	if f.nomad.StopAllocation("5f4e7e1c-0d0f-4c4e-9d0b-9a8f1c1e2d3a") == 0 {
		t.Fatal("the fake holds no such allocation")
	}
	f.clock.Add(time.Minute) // past Fresh
	_, err = v.Verify(t.Context(), tok)
	refusal(t, err, ReasonStopped)
	// An identity naming an allocation Nomad never had: refused (404).
	unknown := nomadtest.SignIdentity(nomadtest.Key(0), jose.RS256, nomadtest.KeyID(nomadtest.Key(0)), relay(f.clock.Now()))
	_, err = v.Verify(t.Context(), unknown)
	refusal(t, err, ReasonStopped)
}
