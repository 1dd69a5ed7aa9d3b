package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// RateLimitedError is a registry's 429 Too Many Requests, with the wait it
// asked for in Retry-After (zero when it gave none). The Engine's own pulls
// never show Retry-After (dockerd drops the header), so the agent learns it
// from its own manifest HEAD.
type RateLimitedError struct {
	Ref        string
	RetryAfter time.Duration
}

func (e *RateLimitedError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("registry rate limit for %s: 429 Too Many Requests, retry after %s", e.Ref, e.RetryAfter)
	}
	return fmt.Sprintf("registry rate limit for %s: 429 Too Many Requests", e.Ref)
}

// ErrRemoteNotFound says the registry answered that the reference does not
// exist.
var ErrRemoteNotFound = errors.New("manifest unknown to the registry")

// Remote asks registries directly, not through the Engine, for the digest a
// tag points at: one manifest HEAD, which is what lets a resync of a
// converged node cost no pull (Docker Hub does not count HEADs against its
// pull rate limit, while a pull's manifest GET is counted).
//
// Registries on loopback and private addresses are spoken to over plain
// HTTP, as dockerd does by default; every other host over HTTPS. A registry
// that can't be asked (it needs a client certificate, it's in the daemon's
// insecure-registries, ...) just makes the agent pull as before.
type Remote struct {
	Credentials *Credentials
	// Transport is the base HTTP transport; nil means remote.DefaultTransport.
	Transport http.RoundTripper
}

// Digest returns the manifest digest ref (a tag reference) names in its
// registry. A 429 is a *RateLimitedError; a 404 wraps ErrRemoteNotFound.
func (r *Remote) Digest(ctx context.Context, ref string) (string, error) {
	nref, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("looking up %s: %w", ref, err)
	}
	host := nref.Context().RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	var auth authn.Authenticator = authn.Anonymous
	if r.Credentials != nil {
		ac, err := r.Credentials.Lookup(host)
		if err != nil {
			return "", fmt.Errorf("looking up %s: %w", ref, err)
		}
		auth = authn.FromConfig(authn.AuthConfig{
			Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
			IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
		})
	}
	base := r.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	rt := &retryAfterTransport{base: base}
	desc, err := remote.Head(nref,
		remote.WithContext(ctx),
		remote.WithAuth(auth),
		remote.WithTransport(rt),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}), // the agent retries, with its own backoff
		remote.WithUserAgent("nomad-prefetch"),
	)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) {
			switch terr.StatusCode {
			case http.StatusTooManyRequests:
				return "", &RateLimitedError{Ref: ref, RetryAfter: time.Duration(rt.retryAfter.Load())}
			case http.StatusNotFound:
				return "", fmt.Errorf("looking up %s: %w", ref, ErrRemoteNotFound)
			}
		}
		return "", fmt.Errorf("looking up %s: %w", ref, err)
	}
	return desc.Digest.String(), nil
}

// retryAfterTransport remembers the Retry-After of a 429, which
// go-containerregistry's error does not carry.
type retryAfterTransport struct {
	base       http.RoundTripper
	retryAfter atomic.Int64 // nanoseconds
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		t.retryAfter.Store(int64(parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())))
	}
	return resp, err
}

// parseRetryAfter reads a Retry-After value: seconds, or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
