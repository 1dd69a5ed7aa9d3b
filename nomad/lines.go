package nomad

import (
	"bufio"
	"io"
)

// LinesOptions tune a Lines. Zero values take the defaults.
type LinesOptions struct {
	// BufferSize is the size of the output buffer (default 64 KiB).
	BufferSize int
	// Replace, if set, is written in place of each string an event
	// locates (Event.Strings: the Streamer's Config.Locate), e.g.
	// `"REDACTED"`: it must be a JSON value for the lines to stay JSON.
	Replace []byte
	// Flushed, if set, is called after each flush of the output with the
	// position of the last frame whose events have all reached the writer:
	// what the writer holds up to that call is exactly the frames up to
	// that position. It may block; the stream is not read meanwhile, as when
	// the writer blocks.
	Flushed func(Position)
}

// Lines is the Handler that writes each event as one line (eventlog's
// stdout): buffered, a write never ending inside a line, flushed whenever
// the stream goes idle. A failed write is a *WriteError.
type Lines struct {
	out     *bufio.Writer
	replace []byte
	flushed func(Position)
}

// NewLines returns a Lines writing to w.
func NewLines(w io.Writer, o LinesOptions) *Lines {
	if o.BufferSize <= 0 {
		o.BufferSize = 64 << 10
	}
	return &Lines{out: bufio.NewWriterSize(w, o.BufferSize), replace: o.Replace, flushed: o.Flushed}
}

// WriteError is a failure to write events to the output: it ends Run.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "writing events: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Event buffers the event's line, its located strings replaced when
// Replace is set. A line that does not fit in what is left of the buffer
// flushes it first, so that writes end on line boundaries.
func (l *Lines) Event(e Event) error {
	spans := e.Strings
	if l.replace == nil {
		spans = nil
	}
	n := len(e.Raw) + 1
	for _, sp := range spans {
		n += len(l.replace) - (sp.End - sp.Start)
	}
	if n > l.out.Available() && l.out.Buffered() > 0 {
		if err := l.out.Flush(); err != nil {
			return &WriteError{err}
		}
	}
	prev := 0
	for _, sp := range spans {
		l.out.Write(e.Raw[prev:sp.Start])
		l.out.Write(l.replace)
		prev = sp.End
	}
	l.out.Write(e.Raw[prev:])
	if err := l.out.WriteByte('\n'); err != nil { // a bufio.Writer's error sticks: this is any write's
		return &WriteError{err}
	}
	return nil
}

// Idle writes out the buffered events: every frame up to pos has then
// reached the writer.
func (l *Lines) Idle(pos Position) error {
	if l.out.Buffered() > 0 {
		if err := l.out.Flush(); err != nil {
			return &WriteError{err}
		}
	}
	if pos.Written && l.flushed != nil {
		l.flushed(pos)
	}
	return nil
}

// Discontinuity writes nothing: the Streamer logs and counts it.
func (l *Lines) Discontinuity(Discontinuity) error { return nil }

// Up does nothing.
func (l *Lines) Up() {}

// Down does nothing.
func (l *Lines) Down(error) {}
