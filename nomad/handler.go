package nomad

// Event is one event of a frame, as a Streamer hands it over.
type Event struct {
	// Index is the index of the frame the event came in.
	Index uint64
	// Topic is the event's topic: Job, Allocation, ...
	Topic string
	// Raw is the event, compact JSON exactly as Nomad sent it (the
	// payload's bytes untouched). It is valid only until the call returns.
	Raw []byte
	// Strings are the strings of Raw that Config.Locate names for Topic,
	// in order; valid only until the call returns.
	Strings []Span
}

// DiscontinuityKind says why what a Streamer hands over is not exactly
// Nomad's stream at one point.
type DiscontinuityKind int

const (
	// Gap: Nomad no longer held the index the stream resumed from; the
	// events between Last and Next (both exclusive) may be lost.
	Gap DiscontinuityKind = iota + 1
	// Reset: Nomad's history went backwards (a cluster rebuilt or restored
	// from a snapshot): Next is below Last.
	Reset
	// Skipped: a frame longer than Config.MaxFrameBytes was dropped, its
	// events lost. Next is its index, 0 when it could not be read.
	Skipped
)

func (k DiscontinuityKind) String() string {
	switch k {
	case Gap:
		return "gap"
	case Reset:
		return "reset"
	case Skipped:
		return "skipped"
	}
	return "unknown"
}

// Discontinuity is one place where the stream handed over is not exact.
type Discontinuity struct {
	Kind DiscontinuityKind
	// Last is the index of the last frame handed over before it (0 when
	// none was), Next the index of the frame after it.
	Last, Next uint64
}

// Handler receives what a Streamer reads. Its methods are called on Run's
// goroutine, one at a time. An error from Event, Idle or Discontinuity
// stops Run, which returns that error as it is.
type Handler interface {
	// Event is one new event. A frame's events come in order, all of them
	// before the next frame's; events a resume asked for again, repeats
	// within a frame and frames out of order are not handed over.
	Event(Event) error
	// Idle says the Streamer is about to wait: for the network's next bytes,
	// or to reconnect. Every frame up to pos has then been handed over
	// whole (pos.Written is false until one has). A writer flushes here, so
	// events show as soon as the stream goes quiet and a busy stream costs
	// one write per read from the network.
	Idle(pos Position) error
	// Discontinuity comes before the first frame after the point (for a
	// skipped frame, in its place). State built from the events is no
	// longer exact: a reader rebuilds it (lists again).
	Discontinuity(Discontinuity) error
	// Up says Nomad accepted a subscription (its first heartbeat came).
	Up()
	// Down says a subscription ended, or was never accepted, and why; the
	// Streamer subscribes again after a backoff.
	Down(err error)
}

// handlerError carries a Handler's error out of a session, so that Run
// tells it from the stream's own errors (which it retries).
type handlerError struct{ err error }

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// Frame is one frame handed over whole: its index and its line exactly as
// Nomad sent it, without the newline.
type Frame struct {
	Index uint64
	// Raw is the frame's line; valid only until the call returns.
	Raw []byte
}

// FrameHandler is a Handler that also wants each new frame's bytes (a
// relay serving Nomad's stream again). Frame comes after the frame's
// events were handed to Event, once per frame the resume rules admit; a
// frame without events, a repeat a resume asked for, or a skipped frame
// never comes. A Streamer checks for it once, in Run, so a plain Handler
// pays nothing.
type FrameHandler interface {
	Handler
	Frame(Frame) error
}
