// Package catalogtest is a fake of the two service catalogs prefetch's
// cluster view reads, Nomad's GET /v1/service/NAME and Consul's GET
// /v1/health/service/NAME, for tests and benchmarks. It answers in their
// real shapes: Nomad's from a recorded answer of Nomad 2.0.5, Consul's from
// Consul's documented shape (see testdata/README.md), one element per agent
// address it is given, and it checks the token header. Faults: a status to
// answer every request with (a refused token: 403), a number of 500s
// before the real answer, and a body that is not JSON.
package catalogtest

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
)

//go:embed testdata/nomad-service-prefetch.json
var nomadAnswer []byte

//go:embed testdata/consul-health-service-prefetch.json
var consulAnswer []byte

// Providers.
const (
	Nomad  = "nomad"
	Consul = "consul"
)

// Catalog is a running fake catalog.
type Catalog struct {
	*httptest.Server
	Provider string
	Service  string
	Token    string // required in X-Nomad-Token or X-Consul-Token when set

	mu       sync.Mutex
	agents   []string          // host:port
	down     map[string]bool   // Consul: the node's serfHealth is critical
	jobs     map[string]string // the job registering an address, when not the recorded one
	status   int               // answer this to every request, when set
	fails    int               // answer 500 to this many requests first
	garbage  bool
	recorded bool

	requests atomic.Int64
	nextMu   sync.Mutex
	next     chan struct{} // closed at the next request
}

// Start starts a catalog of provider listing service, on 127.0.0.1.
func Start(provider, service, token string) *Catalog {
	c := &Catalog{Provider: provider, Service: service, Token: token, down: map[string]bool{}, jobs: map[string]string{}}
	c.Server = httptest.NewServer(http.HandlerFunc(c.serve))
	return c
}

// SetAgents sets the agents listed, by address.
func (c *Catalog) SetAgents(addrs ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.agents = append([]string(nil), addrs...)
}

// SetDown marks an agent's node down (Consul's serfHealth critical).
func (c *Catalog) SetDown(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down[addr] = true
}

// SetJob makes job the one that registers addr (Nomad: the registration's
// JobID; Consul: its service meta nomad_job), as when another job
// registers the same service name.
func (c *Catalog) SetJob(addr, job string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.jobs[addr] = job
}

// AnswerStatus makes every request answer status (0: the real answer).
func (c *Catalog) AnswerStatus(status int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = status
}

// FailNext makes the next n requests answer 500.
func (c *Catalog) FailNext(n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fails = n
}

// AnswerGarbage makes every request answer 200 with a body that is not JSON.
func (c *Catalog) AnswerGarbage() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.garbage = true
}

// AnswerRecorded makes every request answer the recorded (or documented)
// answer byte for byte, whatever the agents set.
func (c *Catalog) AnswerRecorded() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recorded = true
}

// Requests counts the requests served.
func (c *Catalog) Requests() int { return int(c.requests.Load()) }

// Asked returns a channel closed when the catalog is next asked: a test
// waits on it for a poller to have come round, instead of sleeping.
func (c *Catalog) Asked() <-chan struct{} {
	c.nextMu.Lock()
	defer c.nextMu.Unlock()
	if c.next == nil {
		c.next = make(chan struct{})
	}
	return c.next
}

func (c *Catalog) serve(w http.ResponseWriter, r *http.Request) {
	c.requests.Add(1)
	c.nextMu.Lock()
	if c.next != nil {
		close(c.next)
		c.next = nil
	}
	c.nextMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	path, header := "/v1/service/"+c.Service, "X-Nomad-Token"
	if c.Provider == Consul {
		path, header = "/v1/health/service/"+c.Service, "X-Consul-Token"
	}
	switch {
	case c.status != 0:
		http.Error(w, http.StatusText(c.status), c.status)
	case c.fails > 0:
		c.fails--
		http.Error(w, "rpc error: No cluster leader", http.StatusInternalServerError)
	case c.Token != "" && r.Header.Get(header) != c.Token:
		http.Error(w, "Permission denied", http.StatusForbidden)
	case r.URL.Path != path:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, "[]") // both answer an unknown service with an empty list
	case c.garbage:
		fmt.Fprint(w, "<html>a proxy's error page</html>")
	case c.recorded && c.Provider == Consul:
		_, _ = w.Write(consulAnswer)
	case c.recorded:
		_, _ = w.Write(nomadAnswer)
	default:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(c.answer())
	}
}

// answer is the catalog's answer: one copy of the recorded (or documented)
// element per agent, its address, port and IDs changed.
func (c *Catalog) answer() []map[string]any {
	tmpl := nomadAnswer
	if c.Provider == Consul {
		tmpl = consulAnswer
	}
	out := make([]map[string]any, 0, len(c.agents))
	for i, addr := range c.agents {
		var elems []map[string]any
		if err := json.Unmarshal(tmpl, &elems); err != nil || len(elems) != 1 {
			panic(fmt.Sprintf("catalogtest: the embedded answer does not parse: %v", err))
		}
		host, portStr, _ := net.SplitHostPort(addr)
		port, _ := strconv.Atoi(portStr)
		e := elems[0]
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i+1, i+1)
		if c.Provider == Consul {
			node, svc := e["Node"].(map[string]any), e["Service"].(map[string]any)
			node["ID"], node["Node"], node["Address"] = id, fmt.Sprintf("client-%d", i+1), host
			svc["ID"], svc["Service"], svc["Address"], svc["Port"] = "_nomad-task-"+id+"-group-prefetch-prefetch-http", c.Service, "", port
			if job, ok := c.jobs[addr]; ok {
				svc["Meta"].(map[string]any)["nomad_job"] = job
			}
			if c.down[addr] {
				checks := e["Checks"].([]any)
				checks[0].(map[string]any)["Status"] = "critical"
			}
		} else {
			e["Address"], e["Port"], e["NodeID"], e["AllocID"], e["ServiceName"] = host, port, id, id, c.Service
			e["ID"] = "_nomad-task-" + id + "-group-prefetch-prefetch-http"
			if job, ok := c.jobs[addr]; ok {
				e["JobID"] = job
			}
		}
		out = append(out, e)
	}
	return out
}
