// Package faultproxy is a reverse proxy for tests that sits in front of a
// real registry on 127.0.0.1 and injects the failures a registry shows in
// production: 500s, 429 with Retry-After, a connection reset in the middle of
// a blob, a blob body that stops without closing, a blob the registry lost.
// It also counts the manifest and blob requests that pass, so a test can
// prove that a converged node fetched no layer.
package faultproxy

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Fault is one kind of failure.
type Fault int

const (
	// None passes every request to the registry.
	None Fault = iota
	// Manifest500 answers manifest requests with 500 Internal Server Error.
	Manifest500
	// Manifest429 answers manifest requests with 429 Too Many Requests and a
	// Retry-After header of RetryAfter.
	Manifest429
	// BlobReset sends half of a blob, then resets the connection.
	BlobReset
	// BlobStall sends half of a blob, then stops sending and keeps the
	// connection open until the client gives up.
	BlobStall
	// BlobUnknown answers blob requests with 404 BLOB_UNKNOWN.
	BlobUnknown
	// Hang accepts every request (the /v2/ ping, token, manifest and blob
	// alike) and never answers it, holding it until the client gives up:
	// a registry whose storage backend hangs. Set None to heal it; requests
	// already held stay held, as on a real server.
	Hang
)

// RetryAfter is the Retry-After value sent with Manifest429, in seconds.
const RetryAfter = "7"

// Proxy is a fault-injecting reverse proxy.
type Proxy struct {
	// Addr is host:port of the proxy, on 127.0.0.1.
	Addr string

	target *url.URL
	rp     *httputil.ReverseProxy
	srv    *http.Server
	closed chan struct{}

	mu     sync.Mutex
	fault  Fault
	times  int // how many more requests the fault applies to; <0: all
	counts map[string]int
	delay  time.Duration    // before every request is passed on (SetDelay)
	link   *link            // shared by every answer's body (SetBandwidth); nil: unlimited
	seen   []Seen           // every request, in arrival order (at most maxSeen)
	sent   map[string]int64 // body bytes answered, by kind (BodyBytes)
	moved  chan struct{}    // closed and replaced at each request
}

// Seen is one request the proxy received.
type Seen struct {
	At     time.Time
	Method string
	Path   string
}

// maxSeen bounds the requests remembered.
const maxSeen = 100000

// Start starts a proxy to the registry at target (http://host:port).
func Start(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		Addr:   ln.Addr().String(),
		target: u,
		closed: make(chan struct{}),
		counts: map[string]int{},
		moved:  make(chan struct{}),
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = r.In.Host
		},
		ErrorLog: log.New(io.Discard, "", 0), // cancelled pulls are expected here
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Close stops the proxy and releases every stalled request.
func (p *Proxy) Close() {
	close(p.closed)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = p.srv.Shutdown(ctx)
}

// Set makes the next times matching requests fail with f; times < 0 means
// every one until the next Set.
func (p *Proxy) Set(f Fault, times int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.times = f, times
}

// Count returns how many requests of kind ("manifest" or "blob", prefixed
// by the method: "GET blob", "HEAD manifest") have reached the proxy.
func (p *Proxy) Count(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[kind]
}

// BodyBytes returns how many bytes of answer bodies to requests of kind
// ("GET blob", ...) the proxy has sent: what the registry served, as an
// uplink would count it.
func (p *Proxy) BodyBytes(kind string) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent[kind]
}

// counting counts the body bytes written for kind.
type counting struct {
	http.ResponseWriter
	p    *Proxy
	kind string
}

func (w *counting) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.p.mu.Lock()
	if w.p.sent == nil {
		w.p.sent = map[string]int64{}
	}
	w.p.sent[w.kind] += int64(n)
	w.p.mu.Unlock()
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (Hijack).
func (w *counting) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *counting) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// SetDelay makes every request wait d before it is passed on or failed (a
// slow registry: the measurements answered each after 3 s); 0
// turns it off. A request whose client gives up meanwhile is dropped.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// SetBandwidth makes every answer's body share one link of bytesPerSec (a
// node's uplink: concurrent pulls split it); 0 removes the limit.
func (p *Proxy) SetBandwidth(bytesPerSec int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.link = nil
	if bytesPerSec > 0 {
		p.link = &link{rate: float64(bytesPerSec)}
	}
}

// link is a shared bandwidth: each write takes its turn on one timeline.
type link struct {
	mu   sync.Mutex
	rate float64   // bytes a second
	next time.Time // when the link is free
}

// take reserves n bytes' time on the link and returns when they are sent.
func (l *link) take(n int) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	return l.next
}

// limited is a ResponseWriter whose body goes through a link, in chunks,
// so that concurrent answers interleave.
type limited struct {
	http.ResponseWriter
	link *link
	ctx  context.Context
}

func (w *limited) Write(b []byte) (int, error) {
	const chunk = 32 << 10
	written := 0
	for len(b) > 0 {
		n := min(len(b), chunk)
		t := time.NewTimer(time.Until(w.link.take(n)))
		select {
		case <-t.C:
		case <-w.ctx.Done():
			t.Stop()
			return written, w.ctx.Err()
		}
		m, err := w.ResponseWriter.Write(b[:n])
		written += m
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

// Unwrap lets http.ResponseController reach the connection (Hijack).
func (w *limited) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *limited) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Requests returns every request received so far, in arrival order.
func (p *Proxy) Requests() []Seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Seen(nil), p.seen...)
}

// WaitFor returns once a request whose path contains substr and whose
// kind (as Count names it, "GET blob") is kind has arrived, or when ctx
// ends (with its error).
func (p *Proxy) WaitFor(ctx context.Context, kind, substr string) error {
	for {
		p.mu.Lock()
		moved := p.moved
		for _, r := range p.seen {
			if r.Method+" "+kindOf(r.Path) == kind && strings.Contains(r.Path, substr) {
				p.mu.Unlock()
				return nil
			}
		}
		p.mu.Unlock()
		select {
		case <-moved:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ResetCounts sets every count back to zero.
func (p *Proxy) ResetCounts() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.counts)
	clear(p.sent)
}

func kindOf(path string) string {
	switch {
	case strings.HasPrefix(path, "/v2/") && strings.Contains(path, "/manifests/"):
		return "manifest"
	case strings.HasPrefix(path, "/v2/") && strings.Contains(path, "/blobs/") && !strings.Contains(path, "/blobs/uploads"):
		return "blob"
	}
	return "other"
}

// take returns the fault to apply to a request of kind k, and counts it.
func (p *Proxy) take(method, k string) Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts[method+" "+k]++
	f := p.fault
	applies := f == Hang ||
		(k == "manifest" && (f == Manifest500 || f == Manifest429)) ||
		(k == "blob" && method == http.MethodGet && (f == BlobReset || f == BlobStall || f == BlobUnknown))
	if !applies || p.times == 0 {
		return None
	}
	if p.times > 0 {
		p.times--
	}
	return f
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if len(p.seen) < maxSeen {
		p.seen = append(p.seen, Seen{At: time.Now(), Method: r.Method, Path: r.URL.Path})
	}
	close(p.moved)
	p.moved = make(chan struct{})
	delay, lk := p.delay, p.link
	p.mu.Unlock()
	w = &counting{ResponseWriter: w, p: p, kind: r.Method + " " + kindOf(r.URL.Path)}
	if lk != nil {
		w = &limited{ResponseWriter: w, link: lk, ctx: r.Context()}
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-p.closed:
			t.Stop()
			return
		}
	}
	switch p.take(r.Method, kindOf(r.URL.Path)) {
	case None:
		p.rp.ServeHTTP(w, r)
	case Manifest500:
		writeError(w, http.StatusInternalServerError, "UNKNOWN", "injected internal server error")
	case Manifest429:
		w.Header().Set("Retry-After", RetryAfter)
		writeError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "injected: too many requests")
	case BlobUnknown:
		writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
	case BlobReset:
		if p.halfBlob(w, r) {
			reset(w)
		}
	case Hang:
		select {
		case <-r.Context().Done():
		case <-p.closed:
		}
	case BlobStall:
		if p.halfBlob(w, r) {
			select {
			case <-r.Context().Done():
			case <-p.closed:
			}
		}
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, `{"errors":[{"code":"`+code+`","message":"`+msg+`"}]}`)
}

// halfBlob fetches the blob from the registry and sends its headers and the
// first half of its body. It reports whether it did.
func (p *Proxy) halfBlob(w http.ResponseWriter, r *http.Request) bool {
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return false
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body[:len(body)/2])
	_ = http.NewResponseController(w).Flush()
	return true
}

// reset closes the client connection with a TCP RST.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}
