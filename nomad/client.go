package nomad

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Client talks to Nomad's HTTP API: event stream subscriptions, and
// variable locks (VarLock). It is built once from the standard Nomad client
// settings; the token is asked for again on every request, so a rotated
// workload identity token is picked up.
type Client struct {
	http    *http.Client
	addr    string  // the address as given, its user information redacted
	base    url.URL // scheme and host; a unix socket is reached as http://127.0.0.1
	region  string
	auth    *api.HttpBasicAuth
	headers http.Header
	token   func() (string, error)
}

// NewClient builds a Client from cfg (usually api.DefaultConfig(): NOMAD_ADDR
// including unix:// sockets, NOMAD_REGION, NOMAD_CACERT, NOMAD_CLIENT_CERT,
// NOMAD_CLIENT_KEY, NOMAD_SKIP_VERIFY, NOMAD_TLS_SERVER_NAME,
// NOMAD_HTTP_AUTH). token is called before each connection; nil means
// cfg.SecretID.
func NewClient(cfg *api.Config, token func() (string, error)) (*Client, error) {
	addr := cfg.Address
	if addr == "" {
		addr = "http://127.0.0.1:4646"
	}
	u, err := url.Parse(addr)
	if err != nil {
		// url.Parse's error quotes the whole address, password included:
		// keep only its reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("parsing Nomad address (NOMAD_ADDR or -address): %w", err)
	}
	c := &Client{addr: redacted(u), region: cfg.Region, auth: cfg.HttpAuth, headers: cfg.Headers, token: token}
	if c.token == nil {
		secret := cfg.SecretID
		c.token = func() (string, error) { return secret, nil }
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		c.auth = &api.HttpBasicAuth{Username: u.User.Username(), Password: pw}
	}

	var dial func(ctx context.Context, network, addr string) (net.Conn, error)
	switch u.Scheme {
	case "unix":
		socket := u.Path
		if socket == "" {
			socket = u.Opaque
		}
		c.base = url.URL{Scheme: "http", Host: "127.0.0.1"}
		var d net.Dialer
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		}
	case "http", "https":
		c.base = url.URL{Scheme: u.Scheme, Host: u.Host, Path: strings.TrimSuffix(u.Path, "/")}
		dial = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	default:
		return nil, fmt.Errorf("parsing Nomad address %q: scheme must be http, https or unix", c.addr)
	}

	if cfg.HttpClient != nil {
		c.http = cfg.HttpClient
		return c, nil
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dial,
		TLSHandshakeTimeout: 10 * time.Second,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
		// The stream is mostly JSON that compresses well, but over a local
		// agent (the usual set-up) gzip costs CPU on both ends for nothing.
		DisableCompression: true,
		MaxIdleConns:       4,
		IdleConnTimeout:    90 * time.Second,
	}
	c.http = &http.Client{Transport: tr}
	if err := api.ConfigureTLS(c.http, cfg.TLSConfig); err != nil {
		return nil, fmt.Errorf("configuring TLS: %w", err)
	}
	return c, nil
}

// Address is the Nomad address with its password, if any, redacted: the
// form to log.
func (c *Client) Address() string { return c.addr }

// TokenFromEnvOrFile returns a token source for NewClient: the file's
// content when file is set (Nomad rewrites secrets/nomad_token when a
// workload identity rotates), else NOMAD_TOKEN, read again on every call.
func TokenFromEnvOrFile(file string) func() (string, error) {
	return func() (string, error) {
		if file == "" {
			return api.DefaultConfig().SecretID, nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading token file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// Subscription is what to ask Nomad for.
type Subscription struct {
	Topics    []string // Nomad's syntax, "Job", "Job:web"; none means "*" (management token)
	Namespace string   // "" is Nomad's default ("default"); "*" is every namespace at subscribe time
}

// HTTPError is a non-200 answer to a subscription.
type HTTPError struct {
	Status int
	Body   string
}

func (e *HTTPError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("Nomad answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("Nomad answered %d %s: %s", e.Status, http.StatusText(e.Status), e.Body)
}

// open starts a subscription at index (inclusive) and returns the response
// once its status is 200.
func (c *Client) open(ctx context.Context, sub Subscription, index uint64) (*http.Response, error) {
	q := url.Values{}
	q.Set("index", strconv.FormatUint(index, 10))
	for _, t := range sub.Topics {
		q.Add("topic", t)
	}
	if sub.Namespace != "" {
		q.Set("namespace", sub.Namespace)
	}
	resp, err := c.do(ctx, http.MethodGet, "/v1/event/stream", q, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		return nil, &HTTPError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body))}
	}
	return resp, nil
}

// do sends one request to Nomad with the client's token, headers, region
// and credentials, and returns the response whatever its status.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader) (*http.Response, error) {
	token, err := c.token()
	if err != nil {
		return nil, err
	}
	if c.region != "" {
		q.Set("region", c.region)
	}
	u := c.base
	u.Path += path
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range c.headers {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("X-Nomad-Token", token)
	}
	if c.auth != nil {
		req.SetBasicAuth(c.auth.Username, c.auth.Password)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// The request URL holds nothing the caller does not know (and no
		// credentials: base has no user info, they go in a header).
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, err
	}
	return resp, nil
}

// redacted is u for logs: url.URL.Redacted hides a password but shows a user
// name, and an address of the form https://TOKEN@host carries its secret
// there; so the whole user information is hidden.
func redacted(u *url.URL) string {
	if u.User == nil {
		return u.String()
	}
	c := *u
	c.User = url.User("xxxxx")
	return c.String()
}
