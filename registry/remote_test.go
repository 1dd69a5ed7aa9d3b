package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
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
