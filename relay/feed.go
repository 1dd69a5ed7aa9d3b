package relay

import "github.com/nomad-prefetch/nomad-prefetch/nomad"

// Feed is the nomad.FrameHandler that fills a History from a
// nomad.Streamer following Nomad.
type Feed struct{ H *History }

var _ nomad.FrameHandler = Feed{}

// Frame keeps the frame's exact bytes.
func (f Feed) Frame(fr nomad.Frame) error {
	f.H.Add(fr.Index, fr.Raw)
	return nil
}

// Discontinuity breaks the history: a subscriber resuming from before it
// must not be served across it as if Nomad's stream were continuous.
func (f Feed) Discontinuity(d nomad.Discontinuity) error {
	next := d.Next
	if d.Kind == nomad.Skipped {
		next++ // the skipped frame's index is not held
	}
	f.H.Break(next)
	return nil
}

// Event does nothing: frames come whole through Frame.
func (Feed) Event(nomad.Event) error { return nil }

// Idle does nothing.
func (Feed) Idle(nomad.Position) error { return nil }

// Up does nothing.
func (Feed) Up() {}

// Down does nothing: the history stays valid across a reconnect, which
// the Streamer resumes exactly or reports as a Discontinuity.
func (Feed) Down(error) {}
