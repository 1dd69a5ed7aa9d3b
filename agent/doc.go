// Package agent owns the reconcile step: making each expected image present
// on the node, from the in-cluster registry when it can serve it and from a
// source registry, retagged locally, when it can't.
//
// It talks to Docker only through the small Docker interface it declares
// (Inspect, Pull, Tag), which registry.Engine implements, so the algorithm is
// tested both against the real daemon and with small fakes. Fetch is
// idempotent check-then-act: running it on a converged node pulls no layer.
package agent
