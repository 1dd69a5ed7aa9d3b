package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	mobyregistry "github.com/moby/moby/api/types/registry"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// A transport unused for transportIdle is dropped: rotating credentials
// make a new cache key each time, and the old ones must not pile up.
func TestRemoteEvictsIdleTransports(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	r := &Remote{Insecure: func(string) bool { return true }}
	repo := func(s string) name.Repository {
		ref, err := name.ParseReference(host+"/"+s+":1", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return ref.Context()
	}
	if _, err := r.transport(context.Background(), repo("a")); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	if len(r.cache) != 1 {
		t.Fatalf("got %d cached transports, want 1", len(r.cache))
	}
	for _, c := range r.cache {
		c.lastUsed = time.Now().Add(-transportIdle - time.Minute)
	}
	r.cache["other-host\x00old-credentials"] = &authedTransport{lock: make(chan struct{}, 1), lastUsed: time.Now().Add(-2 * transportIdle)}
	r.mu.Unlock()
	if _, err := r.transport(context.Background(), repo("b")); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache["other-host\x00old-credentials"]; ok || len(r.cache) != 1 {
		t.Errorf("idle transports kept: %d cached, want only the one just used", len(r.cache))
	}
}

// A lookup waiting for another lookup's ping to the same registry gives up
// with its own context: a hung registry's lock never holds it forever.
func TestRemoteWaitHonoursContext(t *testing.T) {
	t.Parallel()
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	host := strings.TrimPrefix(srv.URL, "http://")
	r := &Remote{Insecure: func(string) bool { return true }}
	first, cancelFirst := context.WithCancel(context.Background())
	defer cancelFirst()
	go func() { _, _ = r.Digest(first, host+"/a:1") }() // holds the registry's lock, pinging forever
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.cache)
		r.mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := r.Digest(ctx, host+"/b:1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the lookup's own deadline", err)
	}
}

// wire records what the agent puts on the wire: every request that reaches
// the base transport, with its scheme, host and whether it carries an
// Authorization header. Every host is dialled at addr (a loopback
// listener), so a registry can be named by any address.
type wire struct {
	rt   http.RoundTripper
	mu   sync.Mutex
	seen []string
}

func newWire(addr string) *wire {
	return &wire{rt: &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}}}
}

func (w *wire) RoundTrip(req *http.Request) (*http.Response, error) {
	w.mu.Lock()
	w.seen = append(w.seen, fmt.Sprintf("%s://%s%s auth=%v", req.URL.Scheme, req.URL.Host, req.URL.Path, req.Header.Get("Authorization") != ""))
	w.mu.Unlock()
	return w.rt.RoundTrip(req)
}

// plainWithAuth reports whether a plain-HTTP request with credentials
// went out.
func (w *wire) plainWithAuth() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, s := range w.seen {
		if strings.HasPrefix(s, "http://") && strings.HasSuffix(s, "auth=true") {
			out = append(out, s)
		}
	}
	return out
}

// Credentials go only where dockerd would send them: a plain-HTTP registry
// at a private-range address gets nothing in the clear (go-containerregistry
// alone would send it Basic credentials), while loopback and a registry the
// daemon lists as insecure are asked over HTTP with them, as dockerd does.
func TestRemoteCredentialsOnlyWhereDockerdSendsThem(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	const user, password = "bot", "never-in-the-clear"
	reg, err := bed.StartRegistry("plain-auth", testbed.RegistryOptions{Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	ref := reg.Addr + "/private:1"
	id, err := bed.Import(ctx, ref, "plain-auth", 4096)
	if err != nil {
		t.Fatal(err)
	}
	want, err := bed.Push(ctx, ref, mobyregistry.AuthConfig{Username: user, Password: password, ServerAddress: reg.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Remove(ctx, id) })
	pw := func() (string, error) { return password, nil }
	const private = "10.1.2.3:5000" // served by reg, through the wire's dialer
	creds := NewCredentials([]Auth{{Host: private, Username: user, Password: pw}, {Host: reg.Addr, Username: user, Password: pw}}, t.TempDir())

	// A private-range address the daemon does not list: refused, and no
	// credentials went out over HTTP.
	w := newWire(reg.Addr)
	r := &Remote{Credentials: creds, Transport: w, Insecure: func(string) bool { return false }}
	_, err = r.Digest(ctx, private+"/private:1")
	var plain *PlainHTTPError
	if !errors.As(err, &plain) || plain.Registry != private || !plain.Credentials || !strings.Contains(err.Error(), "refusing to send the credentials for registry "+private+" over plain HTTP") {
		t.Errorf("private address: got %v, want a PlainHTTPError naming %s", err, private)
	}
	if sent := w.plainWithAuth(); len(sent) > 0 {
		t.Errorf("credentials sent over plain HTTP to %s: %q", private, sent)
	}
	if strings.Contains(fmt.Sprint(err), password) {
		t.Error("the error carries the password")
	}

	// The same registry, listed as insecure by the daemon: asked over HTTP
	// with its credentials, as dockerd would.
	w = newWire(reg.Addr)
	r = &Remote{Credentials: creds, Transport: w, Insecure: func(h string) bool { return h == private }}
	if got, err := r.Digest(ctx, private+"/private:1"); err != nil || got != want {
		t.Errorf("insecure registry: got %q, %v; want %s", got, err, want)
	}
	if len(w.plainWithAuth()) == 0 {
		t.Errorf("insecure registry: no authenticated request seen: %q", w.seen)
	}

	// Loopback, with no daemon to ask: plain HTTP with credentials.
	w = newWire(reg.Addr)
	r = &Remote{Credentials: creds, Transport: w}
	if got, err := r.Digest(ctx, ref); err != nil || got != want {
		t.Errorf("loopback: got %q, %v; want %s", got, err, want)
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	for host, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.9.8.7": true, "localhost:5000": true, "LOCALHOST": true,
		"[::1]:5000": true, "::1": true,
		"10.1.2.3:5000": false, "172.16.0.1:5000": false, "192.168.1.1": false,
		"registry.local:5000": false, "localhost.example:5000": false, "docker.io": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q): got %v, want %v", host, got, want)
		}
	}
}
