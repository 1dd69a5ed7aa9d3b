package status

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

// Handler serves /healthz, /readyz, /metrics and /v1/status.
//
//   - /healthz: 200 while alive() says the agent's loop answers.
//   - /readyz: 200 when every image in the config is present locally, else
//     503 listing the missing ones: a Nomad service check or deploy gate.
//   - /metrics: Prometheus text.
//   - /v1/status: the snapshot as JSON.
func Handler(snapshot func() agent.Snapshot, alive func() bool, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !alive() {
			http.Error(w, "the agent's loop does not answer", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		s := snapshot()
		ok, why := s.Ready()
		if ok {
			fmt.Fprintln(w, "ready: "+why)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: %s\n", why)
		for _, img := range s.Missing() {
			fmt.Fprintf(w, "%s %s %s\n", img.Name, img.Expected, img.State)
		}
	})
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(snapshot())
	})
	return mux
}
