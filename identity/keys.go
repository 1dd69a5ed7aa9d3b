package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// Source is where Keys gets Nomad's key set: *nomad.Client (its JWKS) in
// production, a fake in tests.
type Source interface {
	JWKS(ctx context.Context) ([]byte, error)
}

var _ Source = (*nomad.Client)(nil)

// KeysOptions tune Keys; zero fields take the defaults noted.
type KeysOptions struct {
	// MaxAge is how long a fetched set is used before it is fetched again
	// (10 min): how soon a removed key stops verifying.
	MaxAge time.Duration
	// MinInterval is the least time between two fetches (30 s), however
	// many unknown kids come in.
	MinInterval time.Duration
	// Timeout bounds one fetch (10 s).
	Timeout time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Keys is Nomad's key set, cached; safe for concurrent use.
type Keys struct {
	src  Source
	opts KeysOptions

	mu       sync.Mutex
	set      map[string][]jose.JSONWebKey // by kid; nil before the first good fetch
	fetched  time.Time                    // when set was fetched
	tried    time.Time                    // when the last fetch started
	hasTried bool
	err      error         // the last fetch's failure, nil after a good one
	inflight chan struct{} // closed when the fetch running ends
}

// NewKeys returns the key set src serves, fetched when first needed.
func NewKeys(src Source, opts KeysOptions) *Keys {
	if opts.MaxAge <= 0 {
		opts.MaxAge = 10 * time.Minute
	}
	if opts.MinInterval <= 0 {
		opts.MinInterval = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Keys{src: src, opts: opts}
}

// FromNomad returns the key set c's Nomad serves, with the default options.
func FromNomad(c *nomad.Client) *Keys { return NewKeys(c, KeysOptions{}) }

// errUnknownKey is a kid the set lacks, after a fetch or too soon for one.
var errUnknownKey = errors.New("unknown kid")

// Refresh fetches the set now (or waits for the fetch running), whatever
// its age and MinInterval: to warm the cache at start, or on the caller's
// own schedule. A failure keeps the set held.
func (k *Keys) Refresh(ctx context.Context) error {
	k.mu.Lock()
	if wait := k.inflight; wait != nil {
		k.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	} else {
		wait = k.startLocked()
		k.mu.Unlock()
		k.fetch(ctx, wait)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

// lookup returns the keys named kid, fetching the set first when it is
// older than MaxAge or lacks kid, and MinInterval has passed since the last
// fetch. A set that is only old is used as it is while another caller
// fetches. Errors: errUnknownKey, an *UnavailableError, ctx's.
func (k *Keys) lookup(ctx context.Context, kid string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	now := k.opts.Now()
	keys, known := k.set[kid]
	old := k.set == nil || now.Sub(k.fetched) >= k.opts.MaxAge
	switch {
	case known && !old:
		k.mu.Unlock()
		return keys, nil
	case k.inflight != nil:
		if known {
			k.mu.Unlock()
			return keys, nil
		}
		wait := k.inflight
		k.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	case k.hasTried && now.Sub(k.tried) < k.opts.MinInterval:
		defer k.mu.Unlock()
		return k.resultLocked(kid)
	default:
		done := k.startLocked()
		k.mu.Unlock()
		k.fetch(ctx, done)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.resultLocked(kid)
}

// resultLocked is what the set held says of kid; k.mu is held.
func (k *Keys) resultLocked(kid string) ([]jose.JSONWebKey, error) {
	if keys, ok := k.set[kid]; ok {
		return keys, nil
	}
	if k.set == nil {
		err := k.err
		if err == nil {
			err = errors.New("not fetched yet")
		}
		return nil, &UnavailableError{Err: err}
	}
	return nil, errUnknownKey
}

// startLocked marks a fetch as started and returns the channel its end
// closes; k.mu is held.
func (k *Keys) startLocked() chan struct{} {
	done := make(chan struct{})
	k.inflight, k.tried, k.hasTried = done, k.opts.Now(), true
	return done
}

// fetch fetches the set, keeping the one held on a failure, and closes
// done. It runs in the caller that started it, to its own deadline: a
// caller that goes away does not cut short a fetch others wait for.
func (k *Keys) fetch(ctx context.Context, done chan struct{}) {
	var (
		set map[string][]jose.JSONWebKey
		err error
	)
	defer func() {
		k.mu.Lock()
		if err != nil {
			k.err = err
		} else {
			k.set, k.fetched, k.err = set, k.opts.Now(), nil
		}
		k.inflight = nil
		k.mu.Unlock()
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), k.opts.Timeout)
	defer cancel()
	var b []byte
	if b, err = k.src.JWKS(ctx); err != nil {
		return
	}
	set, err = parseSet(b)
}

// parseSet decodes a key set, keeping the public signing keys of the types
// the algorithms allowed verify, each with its kid. Other keys are skipped,
// as RFC 7517 §5 says a set's unknown keys are; a set left with none is an
// error, so that the last good set is kept.
func parseSet(b []byte) (map[string][]jose.JSONWebKey, error) {
	if len(b) > nomad.MaxJWKS {
		return nil, fmt.Errorf("reading Nomad's keys: %w", nomad.ErrJWKSTooLarge)
	}
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decoding Nomad's keys: %w", err)
	}
	set := map[string][]jose.JSONWebKey{}
	for _, r := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(r); err != nil {
			continue // a type go-jose does not know, or a broken key
		}
		if key.KeyID == "" || !key.IsPublic() || !key.Valid() || (key.Use != "" && key.Use != "sig") || !usable(key.Key) {
			continue
		}
		set[key.KeyID] = append(set[key.KeyID], key)
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("decoding Nomad's keys: no public signing key with a kid among the %d keys served", len(raw.Keys))
	}
	return set, nil
}

// usable is a public key of a type the algorithms allowed verify, of a
// size worth trusting.
func usable(key any) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return true
	}
	return false
}

// fits says whether alg verifies with key.
func fits(alg jose.SignatureAlgorithm, key any) bool {
	switch key.(type) {
	case *rsa.PublicKey:
		return alg == jose.RS256
	case *ecdsa.PublicKey:
		return alg == jose.ES256
	case ed25519.PublicKey:
		return alg == jose.EdDSA
	}
	return false
}
