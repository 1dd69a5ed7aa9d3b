package cluster

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Agent is one `prefetch run` the catalog lists.
type Agent struct {
	// Node names the node: Consul's node name, or the first 8 characters
	// of Nomad's node ID (as `nomad node status` shows it).
	Node       string `json:"node"`
	NodeID     string `json:"node_id,omitempty"`
	Address    string `json:"address"` // host:port of the agent's -listen
	AllocID    string `json:"alloc_id,omitempty"`
	Datacenter string `json:"datacenter,omitempty"`
	// Down says why the catalog itself reports the agent's node gone
	// (Consul: its serfHealth check is critical); such an agent is not
	// asked, and the gate does not wait for it.
	Down string `json:"down,omitempty"`
}

// Catalog lists the agents registered under a service name.
type Catalog interface {
	// Agents returns the registered agents, sorted by node.
	Agents(ctx context.Context) ([]Agent, error)
	// String says where the catalog is, for messages.
	String() string
}

// Provider values: where the job registers its service (the job's
// service_provider variable).
const (
	ProviderNomad  = "nomad"
	ProviderConsul = "consul"
)

// CatalogOptions say which catalog to ask, and how.
type CatalogOptions struct {
	Provider string // ProviderNomad or ProviderConsul
	Service  string // the service name, "prefetch" in the job file
	// Nomad is the Nomad client configuration; nil: api.DefaultConfig(),
	// from NOMAD_ADDR, NOMAD_TOKEN, NOMAD_REGION, NOMAD_NAMESPACE,
	// NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
	// NOMAD_TLS_SERVER_NAME, NOMAD_SKIP_VERIFY, NOMAD_HTTP_AUTH.
	Nomad *api.Config
	// Getenv reads Consul's standard variables; nil: os.Getenv.
	Getenv func(string) string
	// CallTimeout bounds one attempt of a call (DefaultCallTimeout); a
	// transient failure is tried 3 times in all.
	CallTimeout time.Duration
}

// NewCatalog returns the catalog o names.
func NewCatalog(o CatalogOptions) (Catalog, error) {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.Service == "" {
		return nil, &ConfigError{fmt.Errorf("no service name")}
	}
	switch o.Provider {
	case ProviderNomad:
		cfg := o.Nomad
		if cfg == nil {
			cfg = api.DefaultConfig()
		}
		c, err := newNomadCatalog(o.Service, cfg, o.CallTimeout)
		if err != nil {
			return nil, err
		}
		return c, nil
	case ProviderConsul:
		getenv := o.Getenv
		if getenv == nil {
			getenv = os.Getenv
		}
		c, err := newConsulCatalog(o.Service, getenv, o.CallTimeout)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return nil, &ConfigError{fmt.Errorf("provider %q: want %s or %s", o.Provider, ProviderNomad, ProviderConsul)}
}

// nomadCatalog reads Nomad's native service registrations.
type nomadCatalog struct {
	ep      *endpoint
	service string
}

func newNomadCatalog(service string, cfg *api.Config, timeout time.Duration) (*nomadCatalog, error) {
	ep, err := newEndpoint("Nomad", "NOMAD_ADDR", cmp.Or(cfg.Address, "http://127.0.0.1:4646"), "http", cfg.TLSConfig, timeout)
	if err != nil {
		return nil, err
	}
	ep.tokenEnv = "NOMAD_TOKEN"
	if cfg.SecretID != "" {
		ep.header.Set("X-Nomad-Token", cfg.SecretID)
	}
	if cfg.HttpAuth != nil && ep.user == nil {
		ep.user = url.UserPassword(cfg.HttpAuth.Username, cfg.HttpAuth.Password)
	}
	if cfg.Region != "" {
		ep.query.Set("region", cfg.Region)
	}
	if cfg.Namespace != "" {
		ep.query.Set("namespace", cfg.Namespace)
	}
	return &nomadCatalog{ep: ep, service: service}, nil
}

func (c *nomadCatalog) String() string {
	return fmt.Sprintf("Nomad's service %q at %s", c.service, c.ep.base.Host)
}

func (c *nomadCatalog) Agents(ctx context.Context) ([]Agent, error) {
	var regs []api.ServiceRegistration
	if err := c.ep.getJSON(ctx, "/v1/service/"+url.PathEscape(c.service), &regs); err != nil {
		return nil, err
	}
	agents := make([]Agent, 0, len(regs))
	for _, r := range regs {
		agents = append(agents, Agent{
			Node: r.NodeID[:min(8, len(r.NodeID))], NodeID: r.NodeID, AllocID: r.AllocID, Datacenter: r.Datacenter,
			Address: net.JoinHostPort(r.Address, strconv.Itoa(r.Port)),
		})
	}
	return sortAgents(agents), nil
}

// consulCatalog reads Consul's health endpoint, which lists each instance
// with its node and checks (the catalog endpoint has no checks).
type consulCatalog struct {
	ep      *endpoint
	service string
}

// consulEntry is the part of one /v1/health/service element used here.
type consulEntry struct {
	Node struct {
		ID, Node, Address, Datacenter string
	}
	Service struct {
		ID, Service, Address string
		Port                 int
	}
	Checks []struct {
		CheckID, Name, Status, ServiceID string
	}
}

func newConsulCatalog(service string, getenv func(string) string, timeout time.Duration) (*consulCatalog, error) {
	scheme := "http"
	if b, _ := strconv.ParseBool(getenv("CONSUL_HTTP_SSL")); b {
		scheme = "https"
	}
	tlsCfg := &api.TLSConfig{
		CACert: getenv("CONSUL_CACERT"), CAPath: getenv("CONSUL_CAPATH"),
		ClientCert: getenv("CONSUL_CLIENT_CERT"), ClientKey: getenv("CONSUL_CLIENT_KEY"),
		TLSServerName: getenv("CONSUL_TLS_SERVER_NAME"),
	}
	if v := getenv("CONSUL_HTTP_SSL_VERIFY"); v != "" {
		verify, err := strconv.ParseBool(v)
		if err != nil {
			return nil, &ConfigError{fmt.Errorf("CONSUL_HTTP_SSL_VERIFY %q: want true or false", v)}
		}
		tlsCfg.Insecure = !verify
	}
	ep, err := newEndpoint("Consul", "CONSUL_HTTP_ADDR", cmp.Or(getenv("CONSUL_HTTP_ADDR"), "127.0.0.1:8500"), scheme, tlsCfg, timeout)
	if err != nil {
		return nil, err
	}
	ep.tokenEnv = "CONSUL_HTTP_TOKEN"
	token := getenv("CONSUL_HTTP_TOKEN")
	if f := getenv("CONSUL_HTTP_TOKEN_FILE"); f != "" && token == "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, &ConfigError{fmt.Errorf("reading CONSUL_HTTP_TOKEN_FILE: %w", err)}
		}
		token, ep.tokenEnv = strings.TrimSpace(string(b)), "CONSUL_HTTP_TOKEN_FILE"
	}
	if token != "" {
		ep.header.Set("X-Consul-Token", token)
	}
	if auth := getenv("CONSUL_HTTP_AUTH"); auth != "" && ep.user == nil {
		user, pw, _ := strings.Cut(auth, ":")
		ep.user = url.UserPassword(user, pw)
	}
	for env, param := range map[string]string{"CONSUL_NAMESPACE": "ns", "CONSUL_PARTITION": "partition"} {
		if v := getenv(env); v != "" {
			ep.query.Set(param, v)
		}
	}
	return &consulCatalog{ep: ep, service: service}, nil
}

func (c *consulCatalog) String() string {
	return fmt.Sprintf("Consul's service %q at %s", c.service, c.ep.base.Host)
}

func (c *consulCatalog) Agents(ctx context.Context) ([]Agent, error) {
	var entries []consulEntry
	if err := c.ep.getJSON(ctx, "/v1/health/service/"+url.PathEscape(c.service), &entries); err != nil {
		return nil, err
	}
	agents := make([]Agent, 0, len(entries))
	for _, e := range entries {
		a := Agent{
			Node: e.Node.Node, NodeID: e.Node.ID, Datacenter: e.Node.Datacenter,
			Address: net.JoinHostPort(cmp.Or(e.Service.Address, e.Node.Address), strconv.Itoa(e.Service.Port)),
		}
		for _, ch := range e.Checks {
			// Consul's own node check: critical when the node's Consul
			// agent stopped answering gossip (the node is down).
			if ch.CheckID == "serfHealth" && ch.Status == "critical" {
				a.Down = "Consul reports the node down (serfHealth critical)"
			}
		}
		agents = append(agents, a)
	}
	return sortAgents(agents), nil
}

// sortAgents orders agents by node, then address, and makes each Node
// label unique (two allocations on one node during an update).
func sortAgents(agents []Agent) []Agent {
	slices.SortFunc(agents, func(a, b Agent) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), cmp.Compare(a.Address, b.Address))
	})
	seen := map[string]int{}
	for _, a := range agents {
		seen[a.Node]++
	}
	for i, a := range agents {
		if seen[a.Node] > 1 {
			agents[i].Node = a.Node + "/" + a.Address
		}
	}
	return agents
}
