package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
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
	// Invalid says why the registration can't be an agent's (an address
	// or port that is not one); such an agent is not asked, and counts as
	// one that could not be asked.
	Invalid string `json:"invalid,omitempty"`
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

// DefaultJob is the job whose registrations count: the job file's.
const DefaultJob = "prefetch"

// ConsulJobMeta is the service meta key the job file sets to its job ID in
// a Consul registration (Consul's own fields do not name the job).
const ConsulJobMeta = "nomad_job"

// CatalogOptions say which catalog to ask, and how.
type CatalogOptions struct {
	Provider string // ProviderNomad or ProviderConsul
	Service  string // the service name, "prefetch" in the job file
	// Job is the job whose registrations are agents (DefaultJob when
	// empty): a registration of the service name by any other job is left
	// out, since anyone who may run a job may register any service name.
	Job string
	// Nomad is the Nomad client configuration; nil: api.DefaultConfig(),
	// from NOMAD_ADDR, NOMAD_TOKEN, NOMAD_REGION, NOMAD_NAMESPACE,
	// NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
	// NOMAD_TLS_SERVER_NAME, NOMAD_SKIP_VERIFY, NOMAD_HTTP_AUTH.
	Nomad *api.Config
	// Consul is the Consul client configuration; nil:
	// consul.DefaultConfig(), from CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN,
	// CONSUL_HTTP_TOKEN_FILE, CONSUL_HTTP_AUTH, CONSUL_HTTP_SSL,
	// CONSUL_HTTP_SSL_VERIFY, CONSUL_CACERT, CONSUL_CAPATH,
	// CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME,
	// CONSUL_NAMESPACE, CONSUL_PARTITION.
	Consul *consul.Config
	// CallTimeout bounds one attempt of a call (DefaultCallTimeout); a
	// transient failure is tried 3 times in all.
	CallTimeout time.Duration
}

// NewCatalog returns the catalog o names.
func NewCatalog(o CatalogOptions) (Catalog, error) {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	o.Job = cmp.Or(o.Job, DefaultJob)
	if o.Service == "" {
		return nil, &ConfigError{fmt.Errorf("no service name")}
	}
	switch o.Provider {
	case ProviderNomad:
		cfg := o.Nomad
		if cfg == nil {
			cfg = api.DefaultConfig()
		}
		return newNomadCatalog(o, cfg)
	case ProviderConsul:
		cfg := o.Consul
		if cfg == nil {
			cfg = consul.DefaultConfig()
		}
		return newConsulCatalog(o, cfg)
	}
	return nil, &ConfigError{fmt.Errorf("provider %q: want %s or %s", o.Provider, ProviderNomad, ProviderConsul)}
}

// nomadCatalog reads Nomad's native service registrations.
type nomadCatalog struct {
	c       *nomad.Client
	o       CatalogOptions
	ns      string
	timeout time.Duration
}

func newNomadCatalog(o CatalogOptions, cfg *api.Config) (*nomadCatalog, error) {
	c, err := nomad.NewClient(cfg, nil)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("%w (NOMAD_ADDR)", err)}
	}
	return &nomadCatalog{c: c, o: o, ns: cmp.Or(cfg.Namespace, "default"), timeout: o.CallTimeout}, nil
}

// NewNomadCatalogFrom returns the catalog of Nomad's service
// registrations read through c (an agent's own client, whose token file is
// read again at each call) in namespace, with o's service, job and call
// timeout.
func NewNomadCatalogFrom(c *nomad.Client, namespace string, o CatalogOptions) Catalog {
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	o.Job = cmp.Or(o.Job, DefaultJob)
	return &nomadCatalog{c: c, o: o, ns: cmp.Or(namespace, "default"), timeout: o.CallTimeout}
}

func (c *nomadCatalog) String() string {
	return fmt.Sprintf("Nomad's service %q of job %s/%s at %s", c.o.Service, c.ns, c.o.Job, c.c.Address())
}

func (c *nomadCatalog) Agents(ctx context.Context) ([]Agent, error) {
	var regs []*api.ServiceRegistration
	err := retry(ctx, func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		defer cancel()
		var err error
		regs, _, err = c.c.API().Services().Get(c.o.Service, nomad.Query(cctx, &api.QueryOptions{Namespace: c.ns}))
		return c.failure(err)
	})
	if err != nil {
		return nil, err
	}
	agents := make([]Agent, 0, len(regs))
	for _, r := range regs {
		if r.JobID != c.o.Job {
			continue
		}
		agents = append(agents, Agent{
			Node: r.NodeID[:min(8, len(r.NodeID))], NodeID: r.NodeID, AllocID: r.AllocID, Datacenter: r.Datacenter,
			Address: net.JoinHostPort(r.Address, strconv.Itoa(r.Port)), Invalid: invalidAddress(r.Address, r.Port),
		})
	}
	return sortAgents(agents), nil
}

// failure classifies one attempt's error: an *HTTPError, or one saying
// the catalog gave no answer; retry says whether another attempt may help.
func (c *nomadCatalog) failure(err error) (retry bool, _ error) {
	if err == nil {
		return false, nil
	}
	err = nomad.Err(err)
	var he *nomad.HTTPError
	if errors.As(err, &he) {
		e := &HTTPError{API: "Nomad", URL: c.c.Address(), Status: he.Status, Body: he.Body, TokenEnv: "NOMAD_TOKEN"}
		return e.transient(), e
	}
	var re *nomad.RedirectError
	if errors.As(err, &re) {
		return false, err
	}
	if badJSON(err) {
		return false, fmt.Errorf("reading Nomad's answer at %s: %w", c.c.Address(), err)
	}
	return true, fmt.Errorf("asking %s (is Nomad there?): %w", c.c.Address(), netError(err, c.timeout))
}

// consulCatalog reads Consul's health endpoint, which lists each instance
// with its node and checks (the catalog endpoint has no checks).
type consulCatalog struct {
	c        *consul.Client
	o        CatalogOptions
	addr     string
	tokenEnv string
}

func newConsulCatalog(o CatalogOptions, cfg *consul.Config) (*consulCatalog, error) {
	conf := *cfg
	tokenEnv := "CONSUL_HTTP_TOKEN"
	if conf.TokenFile != "" {
		tokenEnv = "CONSUL_HTTP_TOKEN_FILE"
	}
	addr := conf.Address
	if !strings.Contains(addr, "://") {
		addr = cmp.Or(conf.Scheme, "http") + "://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, &ConfigError{fmt.Errorf("parsing Consul address (CONSUL_HTTP_ADDR): %w", err)}
	}
	dialer := &net.Dialer{Timeout: o.CallTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSHandshakeTimeout: o.CallTimeout,
		MaxIdleConns:        2,
		IdleConnTimeout:     30 * time.Second,
	}
	switch u.Scheme {
	case "unix":
		// Consul's client would build its own HTTP client for a socket,
		// without the redirect rule below: dial the socket here instead.
		socket := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socket)
		}
		conf.Address, conf.Scheme = "localhost", "http"
	case "http", "https":
		conf.Address, conf.Scheme = u.Host+strings.TrimSuffix(u.Path, "/"), u.Scheme
	default:
		return nil, &ConfigError{fmt.Errorf("parsing Consul address (CONSUL_HTTP_ADDR): scheme %q: want http, https or unix", u.Scheme)}
	}
	if conf.Scheme == "https" {
		tlsCfg, err := consul.SetupTLSConfig(&conf.TLSConfig)
		if err != nil {
			return nil, &ConfigError{fmt.Errorf("configuring TLS for Consul: %w", err)}
		}
		tlsCfg.MinVersion = tls.VersionTLS12
		tr.TLSClientConfig = tlsCfg
	}
	conf.Transport = tr
	conf.HttpClient = &http.Client{Transport: tr, CheckRedirect: sameHostRedirect("Consul")}
	c, err := consul.NewClient(&conf)
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("configuring the Consul client: %w", err)}
	}
	return &consulCatalog{c: c, o: o, addr: u.Host + u.Path, tokenEnv: tokenEnv}, nil
}

func (c *consulCatalog) String() string {
	return fmt.Sprintf("Consul's service %q of job %s at %s", c.o.Service, c.o.Job, c.addr)
}

func (c *consulCatalog) Agents(ctx context.Context) ([]Agent, error) {
	var entries []*consul.ServiceEntry
	err := retry(ctx, func() (bool, error) {
		cctx, cancel := context.WithTimeout(ctx, c.o.CallTimeout)
		defer cancel()
		var err error
		entries, _, err = c.c.Health().Service(c.o.Service, "", false, (&consul.QueryOptions{}).WithContext(cctx))
		return c.failure(err)
	})
	if err != nil {
		return nil, err
	}
	agents := make([]Agent, 0, len(entries))
	for _, e := range entries {
		if e.Node == nil || e.Service == nil || e.Service.Meta[ConsulJobMeta] != c.o.Job {
			continue
		}
		host := cmp.Or(e.Service.Address, e.Node.Address)
		a := Agent{
			Node: e.Node.Node, NodeID: e.Node.ID, Datacenter: e.Node.Datacenter,
			Address: net.JoinHostPort(host, strconv.Itoa(e.Service.Port)), Invalid: invalidAddress(host, e.Service.Port),
		}
		for _, ch := range e.Checks {
			// Consul's own node check: critical when the node's Consul
			// agent stopped answering gossip (the node is down).
			if ch.CheckID == "serfHealth" && ch.Status == consul.HealthCritical {
				a.Down = "Consul reports the node down (serfHealth critical)"
			}
		}
		agents = append(agents, a)
	}
	return sortAgents(agents), nil
}

func (c *consulCatalog) failure(err error) (retry bool, _ error) {
	if err == nil {
		return false, nil
	}
	var se consul.StatusError
	if errors.As(err, &se) {
		e := &HTTPError{API: "Consul", URL: c.addr, Status: se.Code, Body: strings.TrimSpace(se.Body), TokenEnv: c.tokenEnv}
		return e.transient(), e
	}
	var re *RedirectError
	if errors.As(err, &re) {
		return false, re
	}
	if badJSON(err) {
		return false, fmt.Errorf("reading Consul's answer at %s: %w", c.addr, err)
	}
	return true, fmt.Errorf("asking %s (is Consul there?): %w", c.addr, netError(err, c.o.CallTimeout))
}

// badJSON reports whether err says the answer was not the JSON expected:
// asking again would get the same.
func badJSON(err error) bool {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	return errors.As(err, &se) || errors.As(err, &te)
}

// hostname is what an agent's registered address may be besides an IP;
// numericName is one that a resolver may read as an IP address in a short
// or hexadecimal form (0, 127.1, 0x7f.1), which no host name is (RFC 1123:
// its last label is not all digits).
var (
	hostname    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$`)
	numericName = regexp.MustCompile(`(?i)(^|\.)(0x[0-9a-f]*|[0-9]+)$`)
)

// invalidAddress says why host:port can't be an agent's, "" when it can:
// a port out of range, an address that is neither an IP address nor a host
// name, or an IP address no agent listens on (0.0.0.0 and :: reach the
// asking machine itself; multicast and broadcast reach many).
func invalidAddress(host string, port int) string {
	ip := net.ParseIP(host)
	switch {
	case port < 1 || port > 65535:
		return fmt.Sprintf("the registration's port %d is not a port", port)
	case ip == nil && (!hostname.MatchString(host) || numericName.MatchString(host)):
		return fmt.Sprintf("the registration's address %.80q is not an IP address or a host name", host)
	case ip == nil:
	case ip.IsUnspecified():
		return fmt.Sprintf("the registration's address %s is the unspecified address, not a node's", host)
	case ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || ip.Equal(net.IPv4bcast):
		return fmt.Sprintf("the registration's address %s is a multicast or broadcast address, not a node's", host)
	}
	return ""
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
