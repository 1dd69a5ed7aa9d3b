// Package cluster owns the cluster-wide view of prefetch: it finds every
// `prefetch run` agent through the service catalog the job file registers
// (Nomad's /v1/service/NAME, or Consul's /v1/health/service/NAME), asks
// each agent's /v1/status concurrently (a bounded pool, a deadline per
// agent, one retry of a transient failure), and turns the answers into a
// matrix of images by nodes (`prefetch status -cluster`) and into the
// deploy gate's verdict (`prefetch wait`).
//
// What "a node has an image" means is the agent's own rule,
// agent.Snapshot's Ready and Missing; this package reads it and never
// re-derives it. An agent that has not applied a config yet, or whose
// Docker daemon is unreachable, never counts as having an image.
//
// Catalog addresses, tokens and TLS come from the standard environment
// (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ...; CONSUL_HTTP_ADDR,
// CONSUL_HTTP_TOKEN, CONSUL_CACERT, ...). Every call has a deadline and a
// bounded retry: a catalog that is down or refuses the token is an error
// saying which, and an agent that does not answer is one cell of the
// matrix, never a hang.
//
// It imports agent (the Snapshot it decodes) and backoff. It must not
// import status, metrics, daemon or anything that runs an agent: it is a
// client of agents, run from an operator's machine or a CI job.
package cluster
