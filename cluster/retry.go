package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// Catalog calls: each attempt gets DefaultCallTimeout (CatalogOptions), and
// a transient failure (no answer, a 5xx, a 429) is tried again,
// callAttempts in all.
const (
	DefaultCallTimeout = 10 * time.Second
	callAttempts       = 3
)

var callBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.2}

// HTTPError is an answer other than 200 from a catalog.
type HTTPError struct {
	API    string // "Nomad" or "Consul"
	URL    string // where it was asked, without credentials
	Status int
	Body   string
	// TokenEnv names the variable the token came from, for a refusal.
	TokenEnv string
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s answered %d %s", e.API, e.Status, http.StatusText(e.Status))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	if e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden {
		msg += fmt.Sprintf(" (the token in %s is refused, or may not read the service catalog)", e.TokenEnv)
	}
	return fmt.Sprintf("asking %s: %s", e.URL, msg)
}

// transient reports whether trying again may help.
func (e *HTTPError) transient() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// Permanent reports whether err is a catalog failure that trying again
// won't fix (a refused token, an unknown path, a bad address, a redirect
// elsewhere): a gate that keeps waiting would only hide it.
func Permanent(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return !he.transient()
	}
	var ce *ConfigError
	var re *RedirectError
	var nre *nomad.RedirectError
	return errors.As(err, &ce) || errors.As(err, &re) || errors.As(err, &nre)
}

// ConfigError is a catalog setting from the environment that can't be used.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// RedirectError is a redirect to another host, which is not followed: the
// token (X-Consul-Token, X-Nomad-Token) would go with it.
type RedirectError struct{ API, From, To string }

func (e *RedirectError) Error() string {
	return fmt.Sprintf("%s at %s redirected to %s: not followed, so that the token goes nowhere but the configured address", e.API, e.From, e.To)
}

// sameHostRedirect follows a redirect only within the host asked.
func sameHostRedirect(api string) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return fmt.Errorf("%s redirected 5 times: not followed further", api)
		}
		if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
			return &RedirectError{API: api, From: via[0].URL.Host, To: req.URL.Host}
		}
		return nil
	}
}

// retry calls attempt until it succeeds, says another attempt won't help,
// ctx ends, or callAttempts are made, with backoff in between.
func retry(ctx context.Context, attempt func() (retry bool, err error)) error {
	var err error
	for n := 1; n <= callAttempts; n++ {
		if n > 1 {
			if werr := backoff.Sleep(ctx, callBackoff.Delay(n-1, rand.Float64())); werr != nil {
				return err
			}
		}
		var again bool
		again, err = attempt()
		if err == nil || !again || ctx.Err() != nil {
			return err
		}
	}
	return fmt.Errorf("%w (tried %d times)", err, callAttempts)
}

// netError is err without the request URL that net/http wraps it in (the
// caller says which URL), and a deadline said as such.
func netError(err error, limit time.Duration) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s: %w", limit, err)
	}
	return err
}
