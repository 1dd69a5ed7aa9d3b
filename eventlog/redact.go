package eventlog

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Redacted is what a redacted string becomes.
const Redacted = "REDACTED"

// RedactedFields are the job-spec fields whose strings Redact replaces, as
// paths below a job ("*" is any key or array index). Every string inside
// them is replaced, keys and structure kept: an env block keeps its names,
// an auth block its keys, so a consumer's schema still holds.
var RedactedFields = []string{
	"TaskGroups.*.Tasks.*.Env",                        // env blocks: often tokens and passwords
	"TaskGroups.*.Tasks.*.Config.auth",                // docker driver registry credentials
	"TaskGroups.*.Tasks.*.Templates.*.EmbeddedTmpl",   // inline templates: secrets rendered in
	"TaskGroups.*.Tasks.*.Artifacts.*.GetterSource",   // URLs with credentials (git::https://user:token@...)
	"TaskGroups.*.Tasks.*.Artifacts.*.GetterOptions",  // s3/gcs keys, ssh keys
	"TaskGroups.*.Tasks.*.Artifacts.*.GetterHeaders",  // Authorization headers
	"TaskGroups.*.Tasks.*.Services.*.Checks.*.Header", // HTTP check headers
	"TaskGroups.*.Services.*.Checks.*.Header",         // the same, group services
	"TaskGroups.*.Tasks.*.Services.*.Checks.*.Body",   // HTTP check bodies
	"TaskGroups.*.Services.*.Checks.*.Body",           // the same, group services
	"Payload",                                         // a dispatched job's input
}

// jobRoots are where a job sits in an event: a Job event's payload, and
// the job an Allocation event's allocation carries.
var jobRoots = map[string][]string{
	"Job":        {"Payload", "Job"},
	"Allocation": {"Payload", "Allocation", "Job"},
}

// Redactor replaces the strings of RedactedFields in the jobs that Job and
// Allocation events carry, leaving every other byte of the event as Nomad
// sent it. It is not safe for concurrent use.
type Redactor struct {
	roots map[string]*field // by topic: the fields' tree from the event's root
	out   bytes.Buffer
	spans [][2]int
}

// field is a node of the tree of redacted fields: the keys below it
// (children, or star for any key or index), and whether it is one of them.
type field struct {
	children map[string]*field
	star     *field
	redacted bool
}

func (f *field) add(path []string) {
	if len(path) == 0 {
		f.redacted = true
		return
	}
	var c *field
	if path[0] == "*" {
		if f.star == nil {
			f.star = &field{}
		}
		c = f.star
	} else {
		if f.children == nil {
			f.children = map[string]*field{}
		}
		if c = f.children[path[0]]; c == nil {
			c = &field{}
			f.children[path[0]] = c
		}
	}
	if f.star != nil && len(f.children) > 0 {
		// child would then take a key's node and lose the star's
		panic("eventlog: RedactedFields mixes a key and * at one level")
	}
	c.add(path[1:])
}

// child is the node for key below f, or nil when key is off every route.
func (f *field) child(key []byte) *field {
	if c, ok := f.children[string(key)]; ok {
		return c
	}
	return f.star
}

// NewRedactor returns a Redactor for RedactedFields.
func NewRedactor() *Redactor {
	r := &Redactor{roots: map[string]*field{}}
	for topic, root := range jobRoots {
		t := &field{}
		for _, f := range RedactedFields {
			t.add(append(append([]string(nil), root...), strings.Split(f, ".")...))
		}
		r.roots[topic] = t
	}
	return r
}

// Redact returns event with the secrets of its topic's job replaced; an
// event of another topic, or with nothing to replace, is returned as it is.
// event must be valid JSON (the stream reader checks every event); the
// result is valid until the next call.
func (r *Redactor) Redact(topic string, event []byte) ([]byte, error) {
	root := r.roots[topic]
	if root == nil {
		return event, nil
	}
	r.spans = r.spans[:0]
	w := walker{src: event, spans: r.spans}
	end, err := w.value(0, root, false)
	r.spans = w.spans
	if err == nil && ws(event, end) != len(event) {
		err = errShape
	}
	if err != nil {
		return nil, fmt.Errorf("redacting a %s event: %w", topic, err)
	}
	if len(r.spans) == 0 {
		return event, nil
	}
	r.out.Reset()
	prev := 0
	for _, sp := range r.spans {
		r.out.Write(event[prev:sp[0]])
		r.out.WriteString(`"` + Redacted + `"`)
		prev = sp[1]
	}
	r.out.Write(event[prev:])
	return r.out.Bytes(), nil
}

// walker walks one JSON value's bytes and records the spans of the strings
// to replace. It is hand-written rather than built on encoding/json's
// Decoder.Token, which costs an allocation per token (30 MB/s on a job
// event, slower than the stream it would sit in); it only walks, the
// stream reader having validated the event already, and it fails on
// anything but JSON.
type walker struct {
	src   []byte
	spans [][2]int
}

var errShape = errors.New("not valid JSON")

// value reads the value at i and returns where it ends. f is its node in
// the tree of redacted fields (nil: off every route, skipped whole);
// inside says it is in a redacted field.
func (w *walker) value(i int, f *field, inside bool) (int, error) {
	if !inside {
		if f == nil {
			return skip(w.src, i)
		}
		inside = f.redacted
	}
	i = ws(w.src, i)
	if i >= len(w.src) {
		return 0, errShape
	}
	switch w.src[i] {
	case '{':
		i = ws(w.src, i+1)
		if i < len(w.src) && w.src[i] == '}' {
			return i + 1, nil
		}
		for {
			if i >= len(w.src) || w.src[i] != '"' {
				return 0, errShape
			}
			end, err := str(w.src, i)
			if err != nil {
				return 0, err
			}
			var c *field
			if !inside {
				c = f.child(w.src[i+1 : end-1])
			}
			i = ws(w.src, end)
			if i >= len(w.src) || w.src[i] != ':' {
				return 0, errShape
			}
			if i, err = w.value(i+1, c, inside); err != nil {
				return 0, err
			}
			if i, err = next(w.src, i, '}'); err != nil || w.src[i-1] == '}' {
				return i, err
			}
			i = ws(w.src, i)
		}
	case '[':
		i = ws(w.src, i+1)
		if i < len(w.src) && w.src[i] == ']' {
			return i + 1, nil
		}
		var c *field
		if !inside {
			c = f.star
		}
		for {
			var err error
			if i, err = w.value(i, c, inside); err != nil {
				return 0, err
			}
			if i, err = next(w.src, i, ']'); err != nil || w.src[i-1] == ']' {
				return i, err
			}
		}
	case '"':
		end, err := str(w.src, i)
		if err != nil {
			return 0, err
		}
		if inside {
			w.spans = append(w.spans, [2]int{i, end})
		}
		return end, nil
	default:
		return skip(w.src, i)
	}
}

// next reads the separator after a member or element: a comma, or the
// closing delimiter; it returns the index after it.
func next(b []byte, i int, closing byte) (int, error) {
	i = ws(b, i)
	if i < len(b) && (b[i] == ',' || b[i] == closing) {
		return i + 1, nil
	}
	return 0, errShape
}

func ws(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// str returns the end (after the closing quote) of the string at i: the
// first quote not escaped, found with bytes.IndexByte (most of an event's
// bytes are in strings).
func str(b []byte, i int) (int, error) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return 0, errShape
		}
		j += k
		n := 0 // backslashes right before the quote
		for n < j-i-1 && b[j-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			return j + 1, nil
		}
		j++
	}
}

// structural marks the bytes skip stops at inside a container.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

// skip returns the end of the value at i: a string, a container (strings
// inside it skipped whole, so their brackets don't count) or a scalar.
func skip(b []byte, i int) (int, error) {
	i = ws(b, i)
	if i >= len(b) {
		return 0, errShape
	}
	switch b[i] {
	case '"':
		return str(b, i)
	case '{', '[':
		depth := 0
		for {
			for i < len(b) && !structural[b[i]] {
				i++
			}
			if i == len(b) {
				return 0, errShape
			}
			switch b[i] {
			case '"':
				end, err := str(b, i)
				if err != nil {
					return 0, err
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\r' && b[j] != '\n' {
			j++
		}
		if j == i {
			return 0, errShape
		}
		return j, nil
	}
}
