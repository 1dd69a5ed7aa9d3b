package nomad

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/go-json-experiment/json/jsontext"
)

// A line of the event stream is either the heartbeat `{}` or one frame,
// `{"Index":N,"Events":[{...},{...}]}`. The parser validates the whole line
// as JSON (so a frame cut short by a dropped connection is never taken for a
// whole one) and records where each event object starts and ends, its Topic
// and whether it holds insignificant whitespace, without decoding anything
// else: payloads are copied to stdout byte for byte.
//
// It reads the line with jsontext's streaming decoder (the upstream of Go's
// encoding/json/v2), token by token down to each event's members: every
// value comes back as the raw bytes of the line, validated, neither copied
// nor decoded. encoding/json would either decode the payloads (float64
// numbers, allocations) or, with json.RawMessage, scan every byte twice
// through its much slower state machine; this is the hot path.

// errNotJSON: the line does not start as a JSON object, so it is not a frame
// (an older server's plain-text error tail, say).
var errNotJSON = errors.New("not a JSON object")

type syntaxError struct {
	off int64
	msg string
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid frame at byte %d: %s", e.off, e.msg)
}

// eventSpan locates one event object inside a frame line.
type eventSpan struct {
	start, end           int // the object, braces included
	topicStart, topicEnd int // the Topic string's raw content, quotes excluded
	compact              bool
}

// frameParser parses lines; its decoder and slices are reused from line to
// line.
type frameParser struct {
	heartbeat bool
	index     uint64
	events    []eventSpan

	line []byte
	src  bytes.Buffer // line, which the decoder reads in place
	dec  jsontext.Decoder
}

// reset points the decoder at b. It accepts what encoding/json accepts
// beyond RFC 7493 (a repeated member name, invalid UTF-8 in a string): a
// payload is Nomad's to shape, eventlog only copies it.
func (p *frameParser) reset(b []byte) {
	p.line = b
	p.src = *bytes.NewBuffer(b)
	p.dec.Reset(&p.src, jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true))
}

func (p *frameParser) invalid(msg string) error {
	return &syntaxError{p.dec.InputOffset(), msg}
}

// parse parses one line (without its trailing newline).
func (p *frameParser) parse(b []byte) error {
	p.heartbeat = false
	p.index = 0
	p.events = p.events[:0]
	p.reset(b)
	defer p.reset(nil) // let the line go: readLine frees a past multi-megabyte frame

	if p.dec.PeekKind() != '{' {
		return errNotJSON
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return err
	}
	for p.dec.PeekKind() != '}' {
		name, err := p.dec.ReadValue()
		if err != nil {
			return err
		}
		switch string(name) {
		case `"Index"`:
			err = p.frameIndex()
		case `"Events"`:
			err = p.eventArray()
		default:
			err = p.dec.SkipValue()
		}
		if err != nil {
			return err
		}
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return err
	}
	switch _, err := p.dec.ReadToken(); {
	case err == nil:
		return p.invalid("data after the object")
	case err != io.EOF:
		return err
	}
	if p.index == 0 && len(p.events) == 0 {
		p.heartbeat = true
	}
	return nil
}

// frameIndex reads the frame's Index, an unsigned integer that fits in a
// uint64.
func (p *frameParser) frameIndex() error {
	tok, err := p.dec.ReadToken()
	if err != nil {
		return err
	}
	if tok.Kind() != '0' {
		return p.invalid("Index is not a number")
	}
	if p.index, err = tok.Uint(); err != nil {
		return p.invalid("Index is not an unsigned integer that fits in 64 bits")
	}
	return nil
}

func (p *frameParser) eventArray() error {
	tok, err := p.dec.ReadToken()
	switch {
	case err != nil:
		return err
	case tok.Kind() == 'n':
		return nil
	case tok.Kind() != '[':
		return p.invalid("Events is not an array")
	}
	for {
		switch p.dec.PeekKind() {
		case ']':
			_, err := p.dec.ReadToken()
			return err
		case '{':
			if err := p.event(); err != nil {
				return err
			}
		case jsontext.KindInvalid:
			_, err := p.dec.ReadToken() // the error PeekKind saw
			return err
		default:
			return p.invalid("event is not an object")
		}
	}
}

// event reads one event object member by member, noting its Topic.
func (p *frameParser) event() error {
	if _, err := p.dec.ReadToken(); err != nil {
		return err
	}
	ev := eventSpan{start: int(p.dec.InputOffset()) - 1}
	for p.dec.PeekKind() != '}' {
		name, err := p.dec.ReadValue()
		if err != nil {
			return err
		}
		isTopic := string(name) == `"Topic"`
		v, err := p.dec.ReadValue()
		if err != nil {
			return err
		}
		if isTopic && v[0] == '"' {
			end := int(p.dec.InputOffset())
			ev.topicStart, ev.topicEnd = end-len(v)+1, end-1
		}
	}
	if _, err := p.dec.ReadToken(); err != nil {
		return err
	}
	ev.end = int(p.dec.InputOffset())
	ev.compact = !hasWhitespace(p.line[ev.start:ev.end])
	p.events = append(p.events, ev)
	return nil
}

// hasWhitespace reports whether v, a valid JSON value, holds whitespace
// outside its strings. Nomad's events never do; one that does is compacted
// before it is written. It looks at every byte a second time, so it leaves
// the bytes to bytes.IndexByte and bytes.Count (vectorised) wherever it can:
// a tab, newline or carriage return cannot be inside a valid string, and a
// space is inside one when an odd number of unescaped quotes comes before it.
func hasWhitespace(v []byte) bool {
	if bytes.IndexByte(v, '\t') >= 0 || bytes.IndexByte(v, '\n') >= 0 || bytes.IndexByte(v, '\r') >= 0 {
		return true
	}
	in := false // inside a string at v[done]
	for done := 0; ; {
		j := bytes.IndexByte(v[done:], ' ')
		if j < 0 {
			return false
		}
		seg := v[done : done+j] // an escape never spans a space
		if bytes.IndexByte(seg, '\\') < 0 {
			in = in != (bytes.Count(seg, quote)%2 == 1)
		} else {
			in = inStringAfter(seg, in)
		}
		if !in {
			return true
		}
		done += j + 1
	}
}

var quote = []byte{'"'}

// inStringAfter says whether b, a piece of valid JSON starting inside a
// string or not (in), ends inside one.
func inStringAfter(b []byte, in bool) bool {
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '"':
			in = !in
		case b[i] == '\\' && in:
			i++ // the escaped byte
		}
	}
	return in
}

// leadingIndex reads N from a frame that starts `{"Index":N,`, as Nomad
// writes every frame.
func leadingIndex(b []byte) (uint64, bool) {
	var p frameParser
	p.reset(b)
	if tok, err := p.dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return 0, false
	}
	if name, err := p.dec.ReadValue(); err != nil || string(name) != `"Index"` {
		return 0, false
	}
	tok, err := p.dec.ReadToken()
	if err != nil || tok.Kind() != '0' {
		return 0, false
	}
	n, err := tok.Uint()
	if err != nil || int(p.dec.InputOffset()) >= len(b) { // digits up to the end may be cut short
		return 0, false
	}
	return n, true
}
