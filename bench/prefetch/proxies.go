package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// dockerCounter is a reverse proxy on a unix socket in front of the private
// dockerd's socket that counts every Docker API call by method and path
// (the API version prefix stripped, image references replaced by {ref}).
// Streaming answers (pull progress, the event stream) are passed through
// unbuffered.
type dockerCounter struct {
	Sock string // the socket to point DOCKER_HOST at
	srv  *http.Server
	ln   net.Listener

	mu     sync.Mutex
	counts map[string]int
	last   time.Time // when the latest call arrived
}

func startDockerCounter(sock, upstream string) (*dockerCounter, error) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	c := &dockerCounter{Sock: sock, ln: ln, counts: map[string]int{}}
	target, _ := url.Parse("http://docker")
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.Out.Host = "docker"
		},
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", upstream)
			},
			MaxIdleConnsPerHost: 64,
		},
		FlushInterval: -1,
	}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.mu.Lock()
		c.counts[r.Method+" "+apiPath(r.URL.Path)]++
		c.last = time.Now()
		c.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go func() { _ = c.srv.Serve(ln) }()
	return c, nil
}

var apiVersion = regexp.MustCompile(`^/v[0-9]+\.[0-9]+/`)

// apiPath normalises a Docker API path: "/v1.41/images/127.0.0.1:5000/a:1/json"
// is "/images/{ref}/json".
func apiPath(p string) string {
	p = apiVersion.ReplaceAllString(p, "/")
	rest, ok := strings.CutPrefix(p, "/images/")
	if !ok {
		return p
	}
	switch rest {
	case "create", "json", "search", "load", "get", "prune":
		return p
	}
	for _, suffix := range []string{"/json", "/tag", "/push", "/history", "/get"} {
		if strings.HasSuffix(rest, suffix) {
			return "/images/{ref}" + suffix
		}
	}
	return "/images/{ref}"
}

// snapshot returns the counts so far.
func (c *dockerCounter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.counts))
	for k, v := range c.counts {
		out[k] = v
	}
	return out
}

func (c *dockerCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.counts)
}

// quietSince returns how long ago the latest call arrived.
func (c *dockerCounter) quietSince() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Since(c.last)
}

func (c *dockerCounter) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = c.srv.Shutdown(ctx)
	_ = c.srv.Close()
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// describe renders counts as "GET /images/{ref}/json 200, HEAD /_ping 1".
func describe(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, "`"+k+"` "+itoa(m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// front is the registry address every image is named by: it notes when the
// first request naming a watched repository arrives, then hands every
// request to the faultproxy (which counts it and passes it to the registry).
type front struct {
	Addr string
	next http.Handler
	srv  *http.Server

	mu      sync.Mutex
	watched map[string]chan time.Time // repository name → first arrival
}

func startFront(next http.Handler) (*front, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &front{Addr: ln.Addr().String(), next: next, watched: map[string]chan time.Time{}}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = f.srv.Serve(ln) }()
	return f, nil
}

// watch returns a channel that gets the arrival time of the first request
// whose path names repository repo ("bench/lat-01").
func (f *front) watch(repo string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	f.mu.Lock()
	f.watched[repo] = ch
	f.mu.Unlock()
	return ch
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	if repo, ok := repoOf(r.URL.Path); ok {
		f.mu.Lock()
		if ch, ok := f.watched[repo]; ok {
			ch <- now
			delete(f.watched, repo)
		}
		f.mu.Unlock()
	}
	f.next.ServeHTTP(w, r)
}

// repoOf returns the repository a /v2/<name>/(manifests|blobs|tags)/... path
// names.
func repoOf(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", false
	}
	for _, sep := range []string{"/manifests/", "/blobs/", "/tags/"} {
		if i := strings.Index(rest, sep); i > 0 {
			return rest[:i], true
		}
	}
	return "", false
}

func (f *front) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = f.srv.Shutdown(ctx)
}
