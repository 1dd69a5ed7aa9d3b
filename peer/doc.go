// Package peer owns the agent-to-agent image transfer: every node is a
// source. Server serves an agent's own expected, present images to its
// peers, each as a one-image bundle (the Engine's save of the image's ID
// and a manifest naming it, bundle.Stream; the peers asking for it at once
// share one save, see share); Source takes an image from the
// peers, streaming a transfer into the Engine through a bundle.Loader that
// vets it on the way and verifies what was loaded (no name in the archive,
// the ID the manifest names and the peer announced, a digest pin proven by
// the archive's blobs) before its caller tags anything.
//
// Which agent fetches a new image from the registries is agreed without a
// coordinator: the agents rank one another for each image by rendezvous
// hashing (rank), and the first in that order that expects the image
// fetches it; the others copy it from any peer that has it, each asking in
// an order of its own so that the copies fan out.
//
// Who may ask is the caller's business (Server.Authorize: the agents' Nomad
// workload identity, checked by the discovery package's wiring); which
// images an agent expects and holds is the agent's (Server.Held, from its
// snapshot). It imports bundle and registry, and must not import agent,
// config, discovery, daemon or anything above them.
package peer
