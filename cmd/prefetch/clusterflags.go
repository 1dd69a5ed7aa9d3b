package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/cluster"
	"github.com/nomad-prefetch/nomad-prefetch/status"
)

// clusterFlags are the flags of the commands that look at every agent
// through the service catalog (status -cluster, wait).
type clusterFlags struct {
	provider, service, job string
	tokenFile              string
	parallel               int
	agentTimeout           time.Duration
}

func (c *clusterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.provider, "provider", cluster.ProviderNomad, "the catalog the job registers its service in: nomad (NOMAD_ADDR, NOMAD_TOKEN, ...) or consul (CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...)")
	fs.StringVar(&c.service, "service", "prefetch", "the agents' service name (the job file's service block)")
	fs.StringVar(&c.job, "job", cluster.DefaultJob, "the job whose registrations of the service are agents (Nomad: the registration's job; Consul: the service meta "+cluster.ConsulJobMeta+" the job file sets)")
	fs.StringVar(&c.tokenFile, "token-file", "", "a file holding the bearer token of the agents' -status-token-file, sent to every agent asked")
	fs.IntVar(&c.parallel, "parallel", cluster.DefaultParallel, "agents asked at once")
	fs.DurationVar(&c.agentTimeout, "agent-timeout", cluster.DefaultTimeout, "how long one agent may take to answer, a retry included")
}

// catalog returns the catalog the flags name, or a usage error.
func (c *clusterFlags) catalog() (cluster.Catalog, error) { return c.catalogIn("") }

// catalogIn is catalog with Nomad's registrations read in namespace ns
// rather than NOMAD_NAMESPACE's ("" keeps it).
func (c *clusterFlags) catalogIn(ns string) (cluster.Catalog, error) {
	if c.parallel < 1 || c.parallel > 1024 {
		return nil, fmt.Errorf("-parallel %d: want 1 to 1024", c.parallel)
	}
	if c.agentTimeout < 10*time.Millisecond {
		return nil, fmt.Errorf("-agent-timeout %s: want at least 10ms", c.agentTimeout)
	}
	o := cluster.CatalogOptions{Provider: c.provider, Service: c.service, Job: c.job}
	if ns != "" {
		o.Nomad = api.DefaultConfig()
		o.Nomad.Namespace = ns
	}
	return cluster.NewCatalog(o)
}

// ask returns the options of asking the agents, with the token of
// -token-file, or why the file can't be used.
func (c *clusterFlags) ask() (cluster.AskOptions, error) {
	o := cluster.AskOptions{Parallel: c.parallel, Timeout: c.agentTimeout, Client: cluster.NewClient(c.parallel)}
	if c.tokenFile != "" {
		tok, err := status.ReadToken(c.tokenFile)
		if err != nil {
			return o, fmt.Errorf("-token-file: %w", err)
		}
		o.Token = tok
	}
	return o, nil
}

// clusterOnly refuses the flags of one mode used in the other: -addr with
// -cluster, a catalog flag without it.
func clusterOnly(fs *flag.FlagSet, all bool) error {
	var err error
	fs.Visit(func(f *flag.Flag) {
		switch {
		case err != nil:
		case all && f.Name == "addr":
			err = fmt.Errorf("-addr asks one agent, -cluster every agent: give one of them")
		case !all && (f.Name == "by-node" || f.Name == "provider" || f.Name == "service" || f.Name == "job" || f.Name == "parallel" || f.Name == "agent-timeout"):
			err = fmt.Errorf("-%s needs -cluster", f.Name)
		}
	})
	return err
}
