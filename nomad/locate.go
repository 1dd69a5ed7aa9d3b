package nomad

import (
	"fmt"
	"slices"
	"strings"
)

// Fields names, by topic, the fields of an event whose strings a Streamer
// locates while it parses each frame (Event.Strings), in the same pass that
// validates the frame: eventlog's redaction costs no second walk over the
// event. A path is dot-separated keys from the event object's root
// ("Payload.Job.TaskGroups.*.Tasks.*.Env"), "*" standing for any key or
// array index. Every string value anywhere inside a named field is located
// (object keys are not), and only in events of the topic that names it.
type Fields map[string][]string

// Span is where a located string sits in Event.Raw: Raw[Start:End] is the
// string, quotes included.
type Span struct{ Start, End int }

// Locator is Fields compiled for the frame parser. It is read-only once
// made, so one may serve several Streamers.
type Locator struct {
	root   *locNode
	topics map[string]uint64 // each topic's bit in the masks below
}

// locNode is one key of the merged tree of every topic's paths: the keys
// below it (children, or star for any key or index) and the topics for
// which it is a named field.
type locNode struct {
	children []locChild
	star     *locNode
	located  uint64
}

// locChild is a key below a node. A node has a handful (a task's Env,
// Config, Templates, ...): a scan is cheaper than a map's hash of every key
// the parser meets on a path (BenchmarkDecodeWriteLocate).
type locChild struct {
	key  string
	node *locNode
}

// child is the node for key below n, or nil when key is on no path.
func (n *locNode) child(key []byte) *locNode {
	for _, c := range n.children {
		if c.key == string(key) {
			return c.node
		}
	}
	return n.star
}

// NewLocator compiles f. A path that mixes a key and "*" at one level with
// another path (the key would hide what "*" names below it) is refused, as
// are empty keys and more than 64 topics.
func NewLocator(f Fields) (*Locator, error) {
	topics := make([]string, 0, len(f))
	for t := range f {
		topics = append(topics, t)
	}
	slices.Sort(topics)
	if len(topics) > 64 {
		return nil, fmt.Errorf("fields: %d topics, at most 64", len(topics))
	}
	l := &Locator{root: &locNode{}, topics: map[string]uint64{}}
	for k, t := range topics {
		bit := uint64(1) << k
		l.topics[t] = bit
		for _, p := range f[t] {
			if err := l.root.add(strings.Split(p, "."), bit); err != nil {
				return nil, fmt.Errorf("fields of topic %s: path %q: %w", t, p, err)
			}
		}
	}
	return l, nil
}

func (n *locNode) add(path []string, bit uint64) error {
	if len(path) == 0 {
		n.located |= bit
		return nil
	}
	key := path[0]
	if key == "" {
		return fmt.Errorf("an empty key")
	}
	var c *locNode
	if key == "*" {
		if n.star == nil {
			n.star = &locNode{}
		}
		c = n.star
	} else {
		for _, ch := range n.children {
			if ch.key == key {
				c = ch.node
			}
		}
		if c == nil {
			c = &locNode{}
			n.children = append(n.children, locChild{key, c})
		}
	}
	if n.star != nil && len(n.children) > 0 {
		return fmt.Errorf("a key and * at one level")
	}
	return c.add(path[1:], bit)
}

// Strings returns the strings of event (one JSON object) that the fields of
// topic name, appended to dst: for an event at hand, where a Streamer
// locates them as it parses.
func (l *Locator) Strings(dst []Span, topic string, event []byte) ([]Span, error) {
	p := frameParser{loc: l}
	i := p.ws(event, 0)
	end, err := p.event(event, i)
	if err == nil && p.ws(event, end) != len(event) {
		err = &syntaxError{end, "data after the object"}
	}
	if err != nil {
		return dst, err
	}
	return p.spansOf(dst, p.events[0], l.topics[topic]), nil
}
