// Package agent owns what the node agent does, without the process around
// it: the per-image step (Fetcher: make each expected image present, from
// the in-cluster registry when it can serve it and from a source registry,
// retagged locally, when it can't), Once over a list, and the reconcile Loop
// of `prefetch run`, which owns every image's state and publishes it as a
// Snapshot after each change.
//
// It talks to Docker only through the small interfaces it declares (Docker:
// Inspect, Pull, Tag; ImageEventer; Digester for manifest HEADs), which the
// registry package implements, so the algorithm is tested both against the
// real daemon and with small fakes; Fetch is idempotent check-then-act, and
// running it on a converged node pulls no layer. It tells an Observer what
// happens (the metrics) and never serves anything itself.
//
// With a nomad block the Loop runs a Discoverer (the images of Nomad's
// jobs) and a ForegroundWatcher (the images tasks starting on this node
// wait for), both through interfaces implemented elsewhere (discovery,
// foreground), and yields to Nomad's own pulls: foreground.go states the
// rule.
//
// The Loop's files, by what they own: loop.go (the Loop, an entry's state,
// the run's lifecycle and config changes), schedule.go (which image starts
// when, within the budgets), transitions.go (a fetch's end: retry, resync,
// gone), dockerevents.go (image removals, presence checks, the daemon down
// and back), publish.go (the Snapshot).
//
// It imports config, registry, backoff and outage, and must not import the
// packages that read it: status, metrics, daemon.
package agent
