package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
)

// Catalog calls: each attempt gets DefaultCallTimeout (CatalogOptions), and
// a transient failure (no answer, a 5xx, a 429) is tried again,
// callAttempts in all.
const (
	DefaultCallTimeout = 10 * time.Second
	callAttempts       = 3
	maxCatalog         = 32 << 20 // bytes of a catalog answer read at most
)

var callBackoff = backoff.Policy{Min: 250 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.2}

// HTTPError is an answer other than 200 from a catalog.
type HTTPError struct {
	API    string // "Nomad" or "Consul"
	URL    string // without credentials
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
// won't fix (a refused token, an unknown path, a bad address): a gate that
// keeps waiting would only hide it.
func Permanent(err error) bool {
	var he *HTTPError
	if errors.As(err, &he) {
		return !he.transient()
	}
	var ce *ConfigError
	return errors.As(err, &ce)
}

// ConfigError is a catalog setting from the environment that can't be used.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// endpoint is one HTTP API, Nomad's or Consul's, as the standard
// environment describes it.
type endpoint struct {
	api      string // "Nomad" or "Consul"
	base     url.URL
	http     *http.Client
	header   http.Header
	query    url.Values
	user     *url.Userinfo
	tokenEnv string
	timeout  time.Duration // of one attempt
}

// newEndpoint parses addr (http://, https://, unix://, or host:port with
// scheme) and builds a client trusting tlsCfg.
func newEndpoint(apiName, envName, addr, scheme string, tlsCfg *api.TLSConfig, timeout time.Duration) (*endpoint, error) {
	if !strings.Contains(addr, "://") {
		addr = scheme + "://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		// url.Parse's error quotes the address, password included.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, &ConfigError{fmt.Errorf("parsing %s address (%s): %w", apiName, envName, err)}
	}
	ep := &endpoint{api: apiName, header: http.Header{}, query: url.Values{}, user: u.User, timeout: timeout}
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	dial := dialer.DialContext
	switch u.Scheme {
	case "unix":
		socket := u.Path
		ep.base = url.URL{Scheme: "http", Host: "localhost"}
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		}
	case "http", "https":
		ep.base = url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/")}
	default:
		return nil, &ConfigError{fmt.Errorf("parsing %s address (%s): scheme %q: want http, https or unix", apiName, envName, u.Scheme)}
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dial,
		TLSHandshakeTimeout: timeout,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		MaxIdleConns:        2,
		IdleConnTimeout:     30 * time.Second,
	}
	ep.http = &http.Client{Transport: tr}
	if err := api.ConfigureTLS(ep.http, tlsCfg); err != nil {
		return nil, &ConfigError{fmt.Errorf("configuring TLS for %s: %w", apiName, err)}
	}
	return ep, nil
}

// getJSON decodes the answer to GET path into out, trying again after a
// transient failure.
func (ep *endpoint) getJSON(ctx context.Context, path string, out any) error {
	var err error
	for attempt := 1; attempt <= callAttempts; attempt++ {
		if attempt > 1 {
			if werr := sleep(ctx, callBackoff.Delay(attempt-1, rand.Float64())); werr != nil {
				return err
			}
		}
		var retry bool
		retry, err = ep.getOnce(ctx, path, out)
		if err == nil || !retry || ctx.Err() != nil {
			return err
		}
	}
	return fmt.Errorf("%w (tried %d times)", err, callAttempts)
}

// getOnce makes one attempt; retry says whether another may help.
func (ep *endpoint) getOnce(ctx context.Context, path string, out any) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, ep.timeout)
	defer cancel()
	u := ep.base
	u.Path += path
	u.RawQuery = ep.query.Encode()
	shown := u.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, shown, nil)
	if err != nil {
		return false, fmt.Errorf("asking %s: %w", shown, err)
	}
	for k, v := range ep.header {
		req.Header[k] = v
	}
	if ep.user != nil {
		pw, _ := ep.user.Password()
		req.SetBasicAuth(ep.user.Username(), pw)
	}
	resp, err := ep.http.Do(req)
	if err != nil {
		return true, fmt.Errorf("asking %s (is %s there?): %w", shown, ep.api, netError(err, ep.timeout))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		he := &HTTPError{API: ep.api, URL: shown, Status: resp.StatusCode, Body: strings.TrimSpace(string(body)), TokenEnv: ep.tokenEnv}
		return he.transient(), he
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxCatalog)).Decode(out); err != nil {
		return false, fmt.Errorf("reading %s's answer to %s: %w", ep.api, shown, netError(err, ep.timeout))
	}
	return false, nil
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

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
