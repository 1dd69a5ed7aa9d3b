// Package relay serves Nomad's Job event stream again, so that one agent
// (the elected relay) follows Nomad and the others follow it: Nomad's
// servers then serve one subscriber, not one per agent (issue #19).
//
// A History keeps the last frames, each as the exact line Nomad sent (the
// frames of one split index as separate entries, in order), bounded in
// bytes. A Feed is the nomad.FrameHandler a nomad.Streamer following Nomad
// fills it through. A Server is the http.Handler answering
// GET /v1/event/stream the way Nomad does (inclusive index, `{}`
// heartbeats, newline-delimited frames byte-identical to Nomad's), so a
// nomad.Streamer pointed at it cannot tell it from Nomad, gaps included:
// a request older than what the History can resume exactly starts above
// the requested index, which the client's resume rules report as a gap.
//
// Authentication is the caller's: Server.Authorize (nil allows every
// request) must be set by the agent wiring.
//
// A Member is one agent's part of the election: it contends for a Nomad
// variable lock (halock) whose items name the holder's address, and while
// it holds it follows Nomad into a fresh History and serves it.
//
// It imports nomad and halock of the project's, and must not import
// agent, discovery or cmd.
package relay
