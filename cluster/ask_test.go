package cluster

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
)

const (
	refA = "registry.example:5000/a:1"
	refB = "registry.example:5000/b:1"
)

// snap is a serving agent's snapshot holding images.
func snap(images ...agent.ImageStatus) agent.Snapshot {
	return agent.Snapshot{Config: "/local/config.hcl", ConfigLoaded: time.Now(), Images: images}
}

func present(name, ref string) agent.ImageStatus {
	return agent.ImageStatus{Name: name, Expected: ref, State: agent.StatePresent, ImageID: "sha256:" + name}
}

func failed(name, ref, why string) agent.ImageStatus {
	return agent.ImageStatus{Name: name, Expected: ref, State: agent.StateFailed, LastError: why, Attempts: 3}
}

// serveAgent starts a fake agent whose /v1/status is h, and returns its
// address.
func serveAgent(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func answering(s agent.Snapshot) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/status" {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(s)
	}
}

// stalling accepts the request and never answers.
func stalling(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// Every kind of agent a cluster holds, asked at once: the answers, and for
// those that don't answer, why; the stalled one does not hold the others.
func TestAsk(t *testing.T) {
	t.Parallel()
	var always500, once500 atomic.Int64
	addrs := map[string]string{
		"complete": serveAgent(t, answering(snap(present("a", refA), present("b", refB)))),
		"stalls":   serveAgent(t, stalling),
		"500":      serveAgent(t, func(w http.ResponseWriter, r *http.Request) { always500.Add(1); http.Error(w, "boom", 500) }),
		"500 once": serveAgent(t, func(w http.ResponseWriter, r *http.Request) {
			if once500.Add(1) == 1 {
				http.Error(w, "boom", 500)
				return
			}
			answering(snap(present("a", refA)))(w, r)
		}),
		"garbage": serveAgent(t, func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>not json</html>")) }),
		"404":     serveAgent(t, http.NotFound),
		"closed":  faultproxy.RefusedAddr(t),
	}
	var agents []Agent
	for node, addr := range addrs {
		agents = append(agents, Agent{Node: node, Address: addr})
	}
	agents = append(agents, Agent{Node: "down", Address: faultproxy.RefusedAddr(t), Down: "Consul reports the node down (serfHealth critical)"})
	agents = sortAgents(agents)

	reports := Ask(context.Background(), agents, AskOptions{Parallel: 3, Timeout: 500 * time.Millisecond})
	want := map[string]string{
		"complete": "",
		"500 once": "",
		"stalls":   "no answer within 500ms",
		"500":      `answered 500 Internal Server Error: "boom"`,
		"garbage":  "the answer is not an agent's status: invalid character '<'",
		"404":      "answered 404 Not Found",
		"closed":   "connection refused",
		"down":     "serfHealth critical",
	}
	if len(reports) != len(agents) {
		t.Fatalf("got %d reports for %d agents", len(reports), len(agents))
	}
	for i, r := range reports {
		if r.Agent != agents[i] {
			t.Errorf("report %d is of %s, want %s (the order given)", i, r.Agent.Node, agents[i].Node)
		}
		w := want[r.Agent.Node]
		switch {
		case w == "" && r.Err != nil:
			t.Errorf("%s: got %v, want an answer", r.Agent.Node, r.Err)
		case w != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), w)):
			t.Errorf("%s: got %v, want an error with %q", r.Agent.Node, r.Err, w)
		}
	}
	if n := always500.Load(); n != 2 {
		t.Errorf("an agent answering 500 was asked %d times, want twice (one retry)", n)
	}
}

// Parallel bounds how many agents are asked at once.
func TestAskParallel(t *testing.T) {
	t.Parallel()
	var now, peak atomic.Int64
	h := func(w http.ResponseWriter, r *http.Request) {
		n := now.Add(1)
		defer now.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		answering(snap(present("a", refA)))(w, r)
	}
	var agents []Agent
	for range 12 {
		agents = append(agents, Agent{Node: "n", Address: serveAgent(t, h)})
	}
	for _, r := range Ask(context.Background(), agents, AskOptions{Parallel: 3, Timeout: 10 * time.Second}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	if p := peak.Load(); p > 3 || p < 1 {
		t.Errorf("%d agents were asked at once, want at most 3", p)
	}
}
