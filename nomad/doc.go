// Package nomad owns the conversation with Nomad's HTTP API: the client
// (Client, every call through github.com/hashicorp/nomad/api); the event
// stream (/v1/event/stream), where a Streamer subscribes, hands every new
// event to a Handler, and resumes after any drop from the last index it
// handed over whole, so that nothing is lost and nothing repeated; and the
// variable locks (/v1/var/:path?lock-acquire, VarLock) that let one
// of several eventlog instances stream while the others wait; and the key
// set Nomad signs workload identities with (/.well-known/jwks.json, JWKS),
// bytes bounded and nothing more: parsing and trusting its keys are the
// identity package's. VarLock is the
// requests only: when to renew, when the lock counts as lost and what its
// items hold are eventlog's to decide.
//
// The stream is read by hand rather than through api.EventStream because the
// official client hides what exact resume needs: it drops the heartbeats (so
// a dead connection cannot be told from a quiet cluster), decodes payloads
// into map[string]any (float64 numbers corrupt int64 nanosecond timestamps)
// and has no Namespace field. From github.com/hashicorp/nomad/api it takes
// only what it does well: the standard environment (api.DefaultConfig) and
// the TLS setup (api.ConfigureTLS).
//
// Nomad never says it dropped events. The Streamer proves continuity by
// resubscribing at the last written index, which Nomad treats inclusively:
// when that frame comes back first, nothing was missed and it is dropped as a
// duplicate; a higher first index is a gap and a lower one a rebuilt history,
// both reported. See docs/eventlog.md for the whole contract.
//
// The stream's parts, each in its file and tested alone: lineReader
// (linereader.go) splits the body into bounded lines; frameParser
// (frame.go) validates a frame and finds its events without decoding
// them; resume (resume.go) is the pure decision of what a frame is (new, a
// repeat, after a gap or a reset, out of order); the Streamer (stream.go)
// connects them, with the heartbeat bound, the backoff and the outage
// reporting. Two Handlers use it: Lines (lines.go) writes each event as a
// line to a writer (eventlog's stdout, buffered, flushed when the stream
// goes quiet), and discovery's follower decodes Job events.
//
// It imports backoff and outage of the project's, and must not import the
// eventlog package or anything of prefetch's (agent, registry, status).
package nomad
