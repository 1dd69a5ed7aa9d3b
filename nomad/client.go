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
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Client is the one way the project talks to Nomad: the official client
// (github.com/hashicorp/nomad/api) with the few things this project needs
// on top, all in its HTTP client so that every call gets them:
//
//   - the token is asked for again on every request (TokenFromEnvOrFile
//     re-reads a workload identity's file, which Nomad rewrites when it
//     rotates), and sent only to the Nomad address configured;
//   - a redirect to another host is not followed, so X-Nomad-Token never
//     leaves for a host nobody configured (net/http would copy it);
//   - unix:// addresses (the task API socket) dial with a deadline;
//   - answers are bounded (MaxAnswer; an error body to maxErrorBody), the
//     event stream excepted, which is read line by line by the Streamer;
//   - no gzip: over a local agent (the usual set-up) it costs CPU on both
//     ends for nothing, and the stream is read as it comes.
type Client struct {
	api  *api.Client
	addr string // the address as given, its user information redacted
}

// MaxAnswer bounds one JSON answer: a job of hundreds of tasks is a few MB;
// more is not an answer Nomad gives.
const MaxAnswer = 32 << 20

// maxErrorBody bounds the text of an answer other than 200 that is kept.
const maxErrorBody = 4 << 10

// StreamPath is the event stream's path: its answer is not bounded.
const StreamPath = "/v1/event/stream"

// NewClient builds a Client from cfg (usually api.DefaultConfig(): NOMAD_ADDR
// including unix:// sockets, NOMAD_REGION, NOMAD_NAMESPACE, NOMAD_CACERT,
// NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY, NOMAD_SKIP_VERIFY,
// NOMAD_TLS_SERVER_NAME, NOMAD_HTTP_AUTH). An address without a scheme
// (127.0.0.1:4646) is taken as http://. token is called before each request;
// nil means cfg.SecretID. cfg.HttpClient, when set, is used as it is (tests).
func NewClient(cfg *api.Config, token func() (string, error)) (*Client, error) {
	conf := *cfg
	if conf.Address == "" {
		conf.Address = "http://127.0.0.1:4646"
	}
	if !strings.Contains(conf.Address, "://") {
		conf.Address = "http://" + conf.Address
	}
	u, err := url.Parse(conf.Address)
	if err != nil {
		// url.Parse's error quotes the whole address, password included:
		// keep only its reason.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, fmt.Errorf("parsing Nomad address (NOMAD_ADDR or -address): %w", err)
	}
	c := &Client{addr: redacted(u)}
	if token == nil {
		secret := conf.SecretID
		token = func() (string, error) { return secret, nil }
	}
	conf.SecretID = "" // the transport sets the token, from token

	var dial func(ctx context.Context, network, addr string) (net.Conn, error)
	dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	host := u.Host
	switch u.Scheme {
	case "unix":
		socket := u.Path
		if socket == "" {
			socket = u.Opaque
		}
		if socket == "" {
			return nil, fmt.Errorf("parsing Nomad address %q: a unix:// address needs the socket's path", c.addr)
		}
		host = "127.0.0.1" // where the official client sends a socket's requests
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		}
	case "http", "https":
		dial = dialer.DialContext
	default:
		return nil, fmt.Errorf("parsing Nomad address %q: scheme must be http, https or unix", c.addr)
	}
	hc := conf.HttpClient
	if hc == nil {
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         dial,
			TLSHandshakeTimeout: 10 * time.Second,
			TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12},
			DisableCompression:  true,
			MaxIdleConns:        8,
			IdleConnTimeout:     90 * time.Second,
		}
		hc = &http.Client{Transport: tr}
		if err := api.ConfigureTLS(hc, conf.TLSConfig); err != nil {
			return nil, fmt.Errorf("configuring TLS: %w", err)
		}
	}
	hc = &http.Client{
		Transport:     &transport{base: hc.Transport, host: host, token: token},
		CheckRedirect: sameHostRedirect,
		Jar:           hc.Jar,
	}
	conf.HttpClient = hc
	if c.api, err = api.NewClient(&conf); err != nil {
		return nil, fmt.Errorf("building the Nomad client: %w", err)
	}
	return c, nil
}

// API is the official client, for the calls the project makes. Pass every
// call a deadline (QueryOptions.WithContext); errors are best read through
// Err.
func (c *Client) API() *api.Client { return c.api }

// Address is the Nomad address with its user information, if any, redacted:
// the form to log.
func (c *Client) Address() string { return c.addr }

// TokenFromEnvOrFile returns a token source for NewClient: the file's
// content when file is set (Nomad rewrites secrets/nomad_token when a
// workload identity rotates), else NOMAD_TOKEN, read again on every call.
func TokenFromEnvOrFile(file string) func() (string, error) {
	return func() (string, error) {
		if file == "" {
			return os.Getenv("NOMAD_TOKEN"), nil
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("reading token file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}

// transport puts the token on requests to Nomad's own host and bounds what
// is read of an answer.
type transport struct {
	base  http.RoundTripper
	host  string
	token func() (string, error)
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	r.Header.Del("X-Nomad-Token")
	r.Header.Del("Accept-Encoding") // the official client asks for gzip
	if r.URL.Host == t.host {
		tok, err := t.token()
		if err != nil {
			return nil, err
		}
		if tok != "" {
			r.Header.Set("X-Nomad-Token", tok)
		}
	}
	resp, err := t.base.RoundTrip(r)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		resp.Body = &boundedBody{rc: resp.Body, left: maxErrorBody, quiet: true}
	case r.URL.Path != StreamPath:
		resp.Body = &boundedBody{rc: resp.Body, left: MaxAnswer}
	}
	return resp, nil
}

// sameHostRedirect follows a redirect only within the host asked.
func sameHostRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects from Nomad")
	}
	if req.URL.Host != via[0].URL.Host || req.URL.Scheme != via[0].URL.Scheme {
		return &RedirectError{From: via[0].URL.Host, To: req.URL.Host}
	}
	return nil
}

// RedirectError is a redirect to another host, which is not followed: the
// token would go with it.
type RedirectError struct{ From, To string }

func (e *RedirectError) Error() string {
	return fmt.Sprintf("Nomad at %s redirected to %s: not followed, so that the token goes nowhere but the configured address", e.From, e.To)
}

// ErrAnswerTooLarge is an answer larger than MaxAnswer.
var ErrAnswerTooLarge = fmt.Errorf("the answer is larger than %d MiB", MaxAnswer>>20)

// boundedBody reads at most left bytes: past them, an error, or (quiet,
// for an error's text) the end.
type boundedBody struct {
	rc    io.ReadCloser
	left  int64
	quiet bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		if b.quiet {
			return 0, io.EOF
		}
		return 0, ErrAnswerTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }

// Subscription is what to ask Nomad for.
type Subscription struct {
	Topics    []string // Nomad's syntax, "Job", "Job:web"; none means "*" (management token)
	Namespace string   // "" is Nomad's default ("default"); "*" is every namespace at subscribe time
}

// HTTPError is an answer other than 2xx.
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

// ErrRefused marks an answer that says the token may not do what was asked
// (403): retrying with the same token will not help.
var ErrRefused = errors.New("refused by Nomad: the token lacks a permission (see the ACL policy)")

// Err turns what the official client returned into the project's errors:
// an answer other than 2xx becomes an *HTTPError (a 403 also wraps
// ErrRefused), and the request URL net/http wraps an error in goes (the
// caller says what it asked). nil stays nil.
func Err(err error) error {
	if err == nil {
		return nil
	}
	var ue api.UnexpectedResponseError
	if errors.As(err, &ue) && ue.HasStatusCode() {
		he := &HTTPError{Status: ue.StatusCode(), Body: strings.TrimSpace(ue.Body())}
		if he.Status == http.StatusForbidden {
			return fmt.Errorf("%w: %w", he, ErrRefused) // one line (errors.Join would put a newline in every message)
		}
		return he
	}
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}

// Query is a query's options with ctx.
func Query(ctx context.Context, q *api.QueryOptions) *api.QueryOptions {
	if q == nil {
		q = &api.QueryOptions{}
	}
	return q.WithContext(ctx)
}

// open starts a subscription at index (inclusive) and returns its body once
// Nomad answered 200.
func (c *Client) open(ctx context.Context, sub Subscription, index uint64) (io.ReadCloser, error) {
	q := url.Values{}
	q.Set("index", fmt.Sprint(index))
	for _, t := range sub.Topics {
		q.Add("topic", t) // repeated: QueryOptions.Params holds one value a key
	}
	body, err := c.api.Raw().Response(StreamPath+"?"+q.Encode(), Query(ctx, &api.QueryOptions{Namespace: sub.Namespace}))
	return body, Err(err)
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
