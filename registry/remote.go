package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/moby/moby/api/types/registry"
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
// Registries on loopback (127.0.0.0/8, ::1, localhost) and those the daemon
// lists as insecure (Insecure) are spoken to over plain HTTP, as dockerd
// does; every other host only over HTTPS. go-containerregistry on its own
// would also try plain HTTP for private-range addresses (10/8, 172.16/12,
// 192.168/16) and *.local names, sending a registry's credentials in the
// clear where dockerd never would: Remote refuses every plain-HTTP request
// to such a host with a *PlainHTTPError instead. A registry that can't be asked (it needs a
// client certificate, it is insecure because of a self-signed certificate
// rather than plain HTTP, ...) just makes the agent pull as before.
//
// The authenticated transport of a registry (its /v2/ ping, its bearer
// token) is kept and reused, so a resync of many images costs one HEAD per
// image, not a ping and a token exchange too. It is made anew when the
// credentials change, and after maxReposPerTransport repositories; one
// unused for transportIdle is dropped.
//
// Remote sets no deadline of its own: the caller's context bounds the whole
// lookup (ping, token and HEAD), and a lookup waiting for another one to
// finish a registry's ping gives up with its own context too.
type Remote struct {
	Credentials *Credentials
	// Transport is the base HTTP transport; nil means remote.DefaultTransport.
	Transport http.RoundTripper
	// Insecure, when set, says which registry hosts the daemon speaks plain
	// HTTP to (Engine.InsecureRegistries): they are asked over HTTP too.
	Insecure func(host string) bool

	mu    sync.Mutex
	cache map[string]*authedTransport // by host and credentials
}

// maxReposPerTransport bounds how many repositories share one transport: a
// bearer transport asks its token server for every scope it has seen, one
// query parameter each, and token URLs must stay a sane length.
const maxReposPerTransport = 100

// transportIdle is how long an unused transport is kept: credentials that
// rotate make a new cache key each time, and the old ones must not pile up.
const transportIdle = time.Hour

// authedTransport is one registry's authenticated transport. Its lock (a
// channel, so that waiting for it honours a context) is held while the
// transport is made, so lookups racing for the same registry wait for one
// ping instead of each sending their own.
type authedTransport struct {
	lock     chan struct{}
	rt       http.RoundTripper
	repos    map[string]bool
	lastUsed time.Time // guarded by Remote.mu
}

// Digest returns the manifest digest ref (a tag reference) names in its
// registry. A 429 is a *RateLimitedError; a 404 wraps ErrRemoteNotFound.
func (r *Remote) Digest(ctx context.Context, ref string) (string, error) {
	nref, err := name.ParseReference(ref)
	if err == nil && r.plainHTTP(nref.Context().RegistryStr()) {
		nref, err = name.ParseReference(ref, name.Insecure)
	}
	if err != nil {
		return "", fmt.Errorf("looking up %s: %w", ref, err)
	}
	var retryAfter atomic.Int64
	ctx = context.WithValue(ctx, retryAfterKey{}, &retryAfter)
	rt, err := r.transport(ctx, nref.Context())
	if err == nil {
		var desc *v1.Descriptor
		desc, err = remote.Head(nref, remote.WithContext(ctx), remote.WithTransport(rt))
		if err == nil {
			return desc.Digest.String(), nil
		}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch terr.StatusCode {
		case http.StatusTooManyRequests:
			return "", &RateLimitedError{Ref: ref, RetryAfter: time.Duration(retryAfter.Load())}
		case http.StatusNotFound:
			return "", fmt.Errorf("looking up %s: %w", ref, ErrRemoteNotFound)
		}
	}
	return "", fmt.Errorf("looking up %s: %w", ref, err)
}

// transport returns the authenticated transport for repo's registry, made
// (with a /v2/ ping) only when there is none to reuse.
func (r *Remote) transport(ctx context.Context, repo name.Repository) (http.RoundTripper, error) {
	host := repo.RegistryStr()
	if host == name.DefaultRegistry {
		host = "docker.io"
	}
	var auth authn.Authenticator = authn.Anonymous
	key := host
	if r.Credentials != nil {
		ac, err := r.Credentials.Lookup(host)
		if err != nil {
			return nil, err
		}
		if ac != (registry.AuthConfig{}) {
			auth = authn.FromConfig(authn.AuthConfig{
				Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
				IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken,
			})
			sum := sha256.Sum256([]byte(ac.Username + "\x00" + ac.Password + "\x00" + ac.Auth + "\x00" + ac.IdentityToken + "\x00" + ac.RegistryToken))
			key += "\x00" + hex.EncodeToString(sum[:])
		}
	}
	now := time.Now()
	r.mu.Lock()
	if r.cache == nil {
		r.cache = map[string]*authedTransport{}
	}
	for k, old := range r.cache {
		if now.Sub(old.lastUsed) > transportIdle {
			delete(r.cache, k)
		}
	}
	c := r.cache[key]
	if c == nil {
		c = &authedTransport{lock: make(chan struct{}, 1)}
		r.cache[key] = c
	}
	c.lastUsed = now
	r.mu.Unlock()

	select {
	case c.lock <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for another lookup's connection to %s: %w", host, context.Cause(ctx))
	}
	defer func() { <-c.lock }()
	name := repo.RepositoryStr()
	if c.rt != nil && (c.repos[name] || len(c.repos) < maxReposPerTransport) {
		c.repos[name] = true
		return c.rt, nil
	}
	base := r.Transport
	if base == nil {
		base = remote.DefaultTransport
	}
	guard := &plainHTTPGuard{base: base, allowed: r.plainHTTP, credentials: auth != authn.Anonymous}
	inner := transport.NewUserAgent(&retryAfterTransport{base: guard}, "nomad-prefetch")
	rt, err := transport.NewWithContext(ctx, repo.Registry, auth, inner, []string{repo.Scope(transport.PullScope)})
	if err != nil {
		return nil, err
	}
	c.rt, c.repos = rt, map[string]bool{name: true}
	return rt, nil
}

// plainHTTP reports whether dockerd speaks plain HTTP to host (host[:port]):
// a loopback address or localhost, or a registry the daemon lists as
// insecure (by name or CIDR, Insecure).
func (r *Remote) plainHTTP(host string) bool {
	return isLoopback(host) || (r.Insecure != nil && r.Insecure(host))
}

// isLoopback reports whether host (host[:port], an IPv6 address in
// brackets) is localhost or a loopback address.
func isLoopback(host string) bool {
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	hostname = strings.TrimSuffix(strings.TrimPrefix(hostname, "["), "]")
	if strings.EqualFold(hostname, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(hostname)
	return err == nil && ip.Unmap().IsLoopback()
}

// PlainHTTPError is a plain-HTTP request Remote refused: host is neither
// loopback nor one of the daemon's insecure registries, so dockerd would
// speak only HTTPS to it, and the agent does not send it anything (least
// of all its credentials) in the clear.
type PlainHTTPError struct {
	// Registry is the host:port the request was for.
	Registry string
	// Credentials is set when the agent has credentials for the registry.
	Credentials bool
}

func (e *PlainHTTPError) Error() string {
	what := "speak plain HTTP to registry " + e.Registry
	if e.Credentials {
		what = "send the credentials for registry " + e.Registry + " over plain HTTP"
	}
	return "refusing to " + what + ": dockerd speaks plain HTTP only to loopback addresses and its insecure-registries (docker info); serve it over HTTPS, or list it in the daemon's insecure-registries"
}

// plainHTTPGuard is the bottom of every registry transport: a plain-HTTP
// request to a host that is not allowed (plainHTTP) fails with a
// *PlainHTTPError before anything is sent. It sits below the auth layers,
// so it sees the ping, the token exchange and every HEAD.
type plainHTTPGuard struct {
	base        http.RoundTripper
	allowed     func(host string) bool
	credentials bool
}

func (g *plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.allowed(req.URL.Host) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, &PlainHTTPError{Registry: req.URL.Host, Credentials: g.credentials}
	}
	return g.base.RoundTrip(req)
}

type retryAfterKey struct{}

// retryAfterTransport records a 429's Retry-After in the request context's
// holder (go-containerregistry's error does not carry it). No retries happen
// here: the agent retries, with its own backoff.
type retryAfterTransport struct {
	base http.RoundTripper
}

func (t *retryAfterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		if holder, ok := req.Context().Value(retryAfterKey{}).(*atomic.Int64); ok {
			holder.Store(int64(parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())))
		}
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
