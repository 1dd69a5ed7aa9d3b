package nomadtest

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
)

//go:embed testdata/nomad-2.0.5/service-prefetch.json
var serviceAnswer []byte

// Registration is one service registration the fake lists.
type Registration struct {
	Namespace string // "default" when empty
	Service   string
	JobID     string // "prefetch" when empty
	Group     string // "prefetch" when empty
	NodeID    string
	AllocID   string // the NodeID when empty
	Address   string // host:port
}

type serviceState struct {
	mu   sync.Mutex
	regs []Registration
}

func (s *Server) services() *serviceState {
	s.svcOnce.Do(func() { s.svcS = &serviceState{} })
	return s.svcS
}

// SetRegistrations replaces every service registration with regs.
func (s *Server) SetRegistrations(regs ...Registration) {
	st := s.services()
	st.mu.Lock()
	defer st.mu.Unlock()
	st.regs = append([]Registration(nil), regs...)
}

// service answers GET /v1/service/:name: the registrations of that name in
// the namespace asked (default "default"), in the recorded element's shape,
// ordered by their IDs as Nomad's state store lists them (its service name
// index ends with the registration ID; testdata/nomad-2.0.5/
// service-prefetch-acl.json, and another recording where that was not
// the creation order). It never blocks: ?index= is answered at once (no test follows a service).
func (s *Server) service(w http.ResponseWriter, r *http.Request) {
	name, ns := r.PathValue("name"), r.URL.Query().Get("namespace")
	if ns == "" {
		ns = "default"
	}
	st := s.services()
	st.mu.Lock()
	regs := append([]Registration(nil), st.regs...)
	st.mu.Unlock()
	out := []map[string]any{}
	for _, reg := range regs {
		if reg.Namespace == "" {
			reg.Namespace = "default"
		}
		if reg.JobID == "" {
			reg.JobID = "prefetch"
		}
		if reg.Group == "" {
			reg.Group = "prefetch"
		}
		if reg.AllocID == "" {
			reg.AllocID = reg.NodeID
		}
		if reg.Service != name || reg.Namespace != ns {
			continue
		}
		var elems []map[string]any
		if err := json.Unmarshal(serviceAnswer, &elems); err != nil || len(elems) != 1 {
			panic(fmt.Sprintf("nomadtest: the recorded service answer does not parse: %v", err))
		}
		host, port, _ := net.SplitHostPort(reg.Address)
		p, _ := strconv.Atoi(port)
		e := elems[0]
		e["Namespace"], e["ServiceName"], e["JobID"], e["NodeID"], e["AllocID"], e["Address"], e["Port"] =
			reg.Namespace, reg.Service, reg.JobID, reg.NodeID, reg.AllocID, host, p
		e["ID"] = "_nomad-task-" + reg.AllocID + "-group-" + reg.Group + "-" + reg.Service + "-http"
		out = append(out, e)
	}
	slices.SortStableFunc(out, func(a, b map[string]any) int { return strings.Compare(a["ID"].(string), b["ID"].(string)) })
	writeJSON(w, http.StatusOK, 0, out)
}
