package status

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

// Endpoints are what an agent serves:
//
//   - /healthz: 200 while Alive says the agent's loop answers.
//   - /readyz: 200 when every image in the config is present locally, else
//     503 saying why and listing the missing ones: a Nomad service check or
//     deploy gate.
//   - /metrics: Prometheus text.
//   - /v1/status: the snapshot as JSON.
//
// /metrics and /v1/status list every image the node keeps, and with
// discovery every namespace's jobs that name them: the cluster's inventory.
// Local serves everything, for a loopback listener; Public serves what
// Nomad's and Consul's checks need to anyone and the inventory only to a
// holder of the bearer token.
type Endpoints struct {
	Snapshot func() agent.Snapshot
	Alive    func() bool
	Metrics  http.Handler
	// Relay, if set, serves GET /v1/event/stream (the Job events relay)
	// on every listener: it checks its callers' identity itself.
	Relay http.Handler
	// Peer, if set, serves GET /v1/peer/image (images to peer agents) on
	// every listener: it checks its callers' identity itself.
	Peer http.Handler
}

// Local serves every endpoint to anyone: for a loopback listener.
func (e Endpoints) Local() http.Handler {
	return e.mux(func(*http.Request) bool { return true }, nil)
}

// Public serves /healthz and /readyz to anyone, /readyz without naming any
// image or error (a check's output is stored in the catalog, readable by
// whoever may read it), and /metrics, /v1/status and /readyz in full only
// to a request with "Authorization: Bearer TOKEN" that token allows. A nil
// token allows none: those are then served on the loopback listener only.
func (e Endpoints) Public(token *Token) http.Handler {
	allows := func(r *http.Request) bool { return token != nil && token.Allows(r) }
	return e.mux(allows, token)
}

// mux serves the endpoints; allowed says whether r may read the inventory.
func (e Endpoints) mux(allowed func(*http.Request) bool, token *Token) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !e.Alive() {
			http.Error(w, "the agent's loop does not answer", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		s := e.Snapshot()
		full := allowed(r)
		ok, why := s.Ready()
		if !full {
			why = coarse(s, why)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if ok {
			fmt.Fprintln(w, "ready: "+why)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", why)
		if !full {
			return
		}
		for _, img := range s.Missing() {
			fmt.Fprintf(w, "%s %s %s\n", img.Name, img.Expected, img.State)
		}
	})
	mux.Handle("GET /metrics", gate(allowed, token, e.Metrics))
	if e.Relay != nil {
		mux.Handle("GET /v1/event/stream", e.Relay)
	}
	if e.Peer != nil {
		mux.Handle("GET /v1/peer/image", e.Peer)
	}
	mux.Handle("GET /v1/status", gate(allowed, token, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e.Snapshot())
	})))
	return mux
}

// gate serves h to the requests allowed, and says to the others what it
// takes.
func gate(allowed func(*http.Request) bool, token *Token, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case allowed(r):
			h.ServeHTTP(w, r)
		case token == nil:
			http.Error(w, r.URL.Path+" is served on the agent's loopback listener (-local-listen) only: start it with -status-token-file to serve it here to a bearer token", http.StatusForbidden)
		default:
			w.Header().Set("WWW-Authenticate", `Bearer realm="prefetch"`)
			http.Error(w, r.URL.Path+" needs Authorization: Bearer with the token of the agent's -status-token-file", http.StatusUnauthorized)
		}
	})
}

// coarse is why, the agent's Ready verdict, without what names an image, a
// job, a path or an error: what /readyz says to anyone.
func coarse(s agent.Snapshot, why string) string {
	switch {
	case s.ConfigLoaded.IsZero():
		return "starting: no config applied yet"
	case s.DockerError != "":
		if s.DockerDownSince != nil {
			return "Docker unreachable since " + s.DockerDownSince.UTC().Format(time.RFC3339)
		}
		return "Docker unreachable"
	case s.Nomad != nil && !s.Nomad.Listed:
		return "discovering: listing Nomad's jobs"
	}
	// The remaining verdicts count images and name none.
	return why
}
