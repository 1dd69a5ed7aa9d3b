package identity

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// gatedSource serves a key set once release is closed, counting requests.
type gatedSource struct {
	set     []byte
	release chan struct{}
	mu      sync.Mutex
	n       int
}

var _ Source = (*gatedSource)(nil)

func (g *gatedSource) JWKS(ctx context.Context) ([]byte, error) {
	g.mu.Lock()
	g.n++
	g.mu.Unlock()
	select {
	case <-g.release:
		return g.set, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gatedSource) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// Callers arriving while a fetch runs wait for it rather than start their
// own; a caller that gives up does not cut the fetch short for the others.
func TestConcurrentCallersShareOneFetch(t *testing.T) {
	t.Parallel()
	fake := nomadtest.StartT(t, nomadtest.Options{})
	set := fake.JWKS()
	issued := time.Now()
	tok := fake.IssueIdentity(relay(issued))
	fake.Close() // only its key set and token are used: the source is in memory

	synctest.Test(t, func(t *testing.T) {
		src := &gatedSource{set: set, release: make(chan struct{})}
		v := &Verifier{Keys: NewKeys(src, KeysOptions{}), Audience: "nomad-prefetch-relay", Namespace: "infra", JobID: "prefetch",
			Now: func() time.Time { return issued }} // the bubble's clock starts in 2000
		first, cancel := context.WithCancel(t.Context())
		var wg sync.WaitGroup
		errs := make([]error, 20)
		for i := range errs {
			ctx := t.Context()
			if i == 0 {
				ctx = first
			}
			wg.Go(func() { _, errs[i] = v.Verify(ctx, tok) })
			if i == 0 {
				synctest.Wait() // the first is fetching
			}
		}
		synctest.Wait()
		cancel() // the fetcher's caller gives up: the fetch goes on
		synctest.Wait()
		close(src.release)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
		}
		if n := src.count(); n != 1 {
			t.Errorf("%d fetches, want 1", n)
		}
	})
}

// A waiter that gives up returns its context's error; a fetch that takes
// longer than Timeout fails, and the callers are told the keys are
// unavailable.
func TestFetchDeadline(t *testing.T) {
	t.Parallel()
	fake := nomadtest.StartT(t, nomadtest.Options{})
	issued := time.Now()
	tok := fake.IssueIdentity(relay(issued))
	fake.Close()

	synctest.Test(t, func(t *testing.T) {
		src := &gatedSource{release: make(chan struct{})} // never released
		v := &Verifier{Keys: NewKeys(src, KeysOptions{Timeout: 5 * time.Second}), Audience: "nomad-prefetch-relay", Namespace: "infra", JobID: "prefetch",
			Now: func() time.Time { return issued }} // the bubble's clock starts in 2000
		var fetcherErr, waiterErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, fetcherErr = v.Verify(t.Context(), tok) })
		synctest.Wait()
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		wg.Go(func() { _, waiterErr = v.Verify(ctx, tok) })
		wg.Wait()
		if !errors.Is(waiterErr, context.DeadlineExceeded) {
			t.Errorf("waiter: got %v, want its deadline", waiterErr)
		}
		var ue *UnavailableError
		if !errors.As(fetcherErr, &ue) || !errors.Is(fetcherErr, context.DeadlineExceeded) {
			t.Errorf("fetcher: got %v, want an *UnavailableError of the fetch's deadline", fetcherErr)
		}
		if n := src.count(); n != 1 {
			t.Errorf("%d fetches, want 1", n)
		}
	})
}
