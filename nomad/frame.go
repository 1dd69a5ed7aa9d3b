package nomad

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
)

// A line of the event stream is either the heartbeat `{}` or one frame,
// `{"Index":N,"Events":[{...},{...}]}`. The parser below validates the whole
// line as JSON (so a frame cut short by a dropped connection is never taken for
// a whole one) and records where each event object starts and ends, its Topic
// and whether it holds insignificant whitespace, without decoding anything
// else: payloads are copied to stdout byte for byte.
//
// It is written by hand because encoding/json would either decode the payloads
// (float64 numbers, allocations) or, with json.RawMessage, scan every byte
// twice through its much slower state machine; this is the hot path.

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

var (
	errNotJSON   = errors.New("not a JSON object")
	errTruncated = errors.New("unexpected end of JSON input")
)

type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("invalid JSON at byte %d: %s", e.off, e.msg) }

// eventSpan locates one event object inside a frame line.
type eventSpan struct {
	start, end           int // the object, braces included
	topicStart, topicEnd int // the Topic string's raw content, quotes excluded
	strs0, strs1         int // its located strings: frameParser.strs[strs0:strs1]
	compact              bool
}

// locSpan is a string inside a field a Locator names, for these topics.
type locSpan struct {
	start, end int
	topics     uint64
}

// frameParser parses lines; its slices are reused from line to line.
type frameParser struct {
	heartbeat bool
	index     uint64
	events    []eventSpan

	loc  *Locator // optional: the fields whose strings to locate
	strs []locSpan

	sawWS bool // whitespace skipped since the flag was last cleared
}

// strPlain marks bytes that may appear in a JSON string without any attention.
var strPlain = func() (t [256]bool) {
	for i := 0x20; i < 256; i++ {
		t[i] = true
	}
	t['"'] = false
	t['\\'] = false
	return t
}()

var isHex = func() (t [256]bool) {
	for _, c := range "0123456789abcdefABCDEF" {
		t[c] = true
	}
	return t
}()

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// parse parses one line (without its trailing newline).
func (p *frameParser) parse(b []byte) error {
	p.heartbeat = false
	p.index = 0
	p.events = p.events[:0]
	p.strs = p.strs[:0]

	i := p.ws(b, 0)
	if i >= len(b) || b[i] != '{' {
		return errNotJSON
	}
	i = p.ws(b, i+1)
	if i >= len(b) {
		return errTruncated
	}
	if b[i] == '}' {
		i++
	} else {
		var err error
		if i, err = p.frameBody(b, i); err != nil {
			return err
		}
	}
	if i = p.ws(b, i); i != len(b) {
		return &syntaxError{i, "data after the object"}
	}
	if p.index == 0 && len(p.events) == 0 {
		p.heartbeat = true
	}
	return nil
}

// frameBody parses the members of the frame object; b[i] is the first key.
func (p *frameParser) frameBody(b []byte, i int) (int, error) {
	var err error
	for {
		if i >= len(b) {
			return 0, errTruncated
		}
		if b[i] != '"' {
			return 0, &syntaxError{i, "expected a key"}
		}
		ks := i
		if i, err = scanString(b, i); err != nil {
			return 0, err
		}
		key := b[ks+1 : i-1]
		if i, err = p.colon(b, i); err != nil {
			return 0, err
		}
		switch string(key) {
		case "Index":
			if p.index, i, err = scanUint(b, i); err != nil {
				return 0, err
			}
		case "Events":
			if i, err = p.eventArray(b, i); err != nil {
				return 0, err
			}
		default:
			if i, err = p.value(b, i, 1, nil, 0); err != nil {
				return 0, err
			}
		}
		if i, err = p.next(b, i, '}'); err != nil || i < 0 {
			return -i, err
		}
	}
}

// colon skips `\s*:\s*` and returns the position of the value.
func (p *frameParser) colon(b []byte, i int) (int, error) {
	i = p.ws(b, i)
	if i >= len(b) {
		return 0, errTruncated
	}
	if b[i] != ':' {
		return 0, &syntaxError{i, "expected ':'"}
	}
	return p.ws(b, i+1), nil
}

// next skips whitespace and a ',' (returning the position of what follows) or
// the closing byte (returning minus the position after it).
func (p *frameParser) next(b []byte, i int, closing byte) (int, error) {
	i = p.ws(b, i)
	if i >= len(b) {
		return 0, errTruncated
	}
	switch b[i] {
	case ',':
		return p.ws(b, i+1), nil
	case closing:
		return -(i + 1), nil
	}
	return 0, &syntaxError{i, "expected ',' or '" + string(closing) + "'"}
}

func (p *frameParser) eventArray(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errTruncated
	}
	if b[i] == 'n' {
		return scanLiteral(b, i, "null")
	}
	if b[i] != '[' {
		return 0, &syntaxError{i, "Events is not an array"}
	}
	i = p.ws(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	var err error
	for {
		if i, err = p.event(b, i); err != nil {
			return 0, err
		}
		if i, err = p.next(b, i, ']'); err != nil || i < 0 {
			return -i, err
		}
	}
}

// event parses one event object, noting its Topic.
func (p *frameParser) event(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errTruncated
	}
	if b[i] != '{' {
		return 0, &syntaxError{i, "event is not an object"}
	}
	ev := eventSpan{start: i, strs0: len(p.strs)}
	p.sawWS = false
	i = p.ws(b, i+1)
	if i >= len(b) {
		return 0, errTruncated
	}
	var err error
	if b[i] == '}' {
		i++
	} else {
		for {
			if i >= len(b) {
				return 0, errTruncated
			}
			if b[i] != '"' {
				return 0, &syntaxError{i, "expected a key"}
			}
			ks := i
			if i, err = scanString(b, i); err != nil {
				return 0, err
			}
			key := b[ks+1 : i-1]
			isTopic := string(key) == "Topic"
			var n *locNode
			var inside uint64
			if p.loc != nil {
				if n = p.loc.root.child(key); n != nil {
					inside = n.located
				}
			}
			if i, err = p.colon(b, i); err != nil {
				return 0, err
			}
			vs := i
			if i, err = p.value(b, i, 2, n, inside); err != nil {
				return 0, err
			}
			if isTopic && b[vs] == '"' {
				ev.topicStart, ev.topicEnd = vs+1, i-1
			}
			if i, err = p.next(b, i, '}'); err != nil {
				return 0, err
			}
			if i < 0 {
				i = -i
				break
			}
		}
	}
	ev.end = i
	ev.strs1 = len(p.strs)
	ev.compact = !p.sawWS
	p.events = append(p.events, ev)
	return i, nil
}

// value validates any JSON value starting at b[i]. n is the value's node in
// the Locator's tree (nil: on no path), inside the topics for which it is in
// a named field: its strings are then noted in p.strs. With neither, as for
// most of a frame, it only validates.
func (p *frameParser) value(b []byte, i, depth int, n *locNode, inside uint64) (int, error) {
	if i >= len(b) {
		return 0, errTruncated
	}
	switch c := b[i]; {
	case c == '"':
		end, err := scanString(b, i)
		if inside != 0 && err == nil {
			p.strs = append(p.strs, locSpan{i, end, inside})
		}
		return end, err
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return 0, &syntaxError{i, "nested too deeply"}
		}
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		i = p.ws(b, i+1)
		if i >= len(b) {
			return 0, errTruncated
		}
		if b[i] == closing {
			return i + 1, nil
		}
		var err error
		var cn *locNode // an element's node: the star for arrays
		ci := inside
		if n != nil && c == '[' {
			if cn = n.star; cn != nil {
				ci |= cn.located
			}
		}
		for {
			if c == '{' {
				if i >= len(b) {
					return 0, errTruncated
				}
				if b[i] != '"' {
					return 0, &syntaxError{i, "expected a key"}
				}
				ks := i
				if i, err = scanString(b, i); err != nil {
					return 0, err
				}
				if n != nil {
					ci = inside
					if cn = n.child(b[ks+1 : i-1]); cn != nil {
						ci |= cn.located
					}
				}
				if i+1 < len(b) && b[i] == ':' && b[i+1] > ' ' {
					i++ // as Nomad writes it: no blanks (every blank is <= ' ')
				} else if i, err = p.colon(b, i); err != nil {
					return 0, err
				}
			}
			// Scalars, most of a job's values, without a call to value.
			if i >= len(b) {
				return 0, errTruncated
			}
			switch v := b[i]; {
			case v == '"':
				vs := i
				if i, err = scanString(b, i); err != nil {
					return 0, err
				}
				if ci != 0 {
					p.strs = append(p.strs, locSpan{vs, i, ci})
				}
			case v == 'n':
				i, err = scanLiteral(b, i, "null")
			case v == 'f':
				i, err = scanLiteral(b, i, "false")
			case v == 't':
				i, err = scanLiteral(b, i, "true")
			case v == '-' || (v >= '0' && v <= '9'):
				i, err = scanNumber(b, i)
			default:
				i, err = p.value(b, i, depth+1, cn, ci)
			}
			if err != nil {
				return 0, err
			}
			if i+1 < len(b) && b[i] == ',' && b[i+1] > ' ' {
				i++ // as Nomad writes it
				continue
			}
			if i, err = p.next(b, i, closing); err != nil || i < 0 {
				return -i, err
			}
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true")
	case c == 'f':
		return scanLiteral(b, i, "false")
	case c == 'n':
		return scanLiteral(b, i, "null")
	}
	return 0, &syntaxError{i, "unexpected byte"}
}

func (p *frameParser) ws(b []byte, i int) int {
	j := i
	for j < len(b) && isWS(b[j]) {
		j++
	}
	if j != i {
		p.sawWS = true
	}
	return j
}

// Eight bytes at a time: lsb and msb are the low and high bit of every byte
// of a word.
const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// special8 has the high bit set in (at least) the lowest byte of x that is a
// '"', a '\\' or a control character, and is zero when x has none. The
// tests are the classic exact "has a zero byte" and "has a byte below n"
// word tricks; a borrow can set bits above the first such byte, never below
// it, so its trailing zeros count the plain bytes before it.
func special8(x uint64) uint64 {
	q := x ^ (lsb * '"')
	s := x ^ (lsb * '\\')
	return ((q-lsb)&^q | (s-lsb)&^s | (x-lsb*0x20)&^x) & msb
}

// scanString returns the position after the string starting at b[i] == '"'.
// Most of a frame's bytes are in strings: it skips plain bytes a word at a
// time (the byte loop alone made it the parser's hottest function, 40% of
// eventlog's CPU; see docs/BENCHMARKS.md).
func scanString(b []byte, i int) (int, error) {
	i++
	for {
		for {
			if i+8 > len(b) {
				for i < len(b) && strPlain[b[i]] {
					i++
				}
				break
			}
			x := binary.LittleEndian.Uint64(b[i:])
			if m := special8(x); m != 0 {
				k := bits.TrailingZeros64(m)
				if q := x ^ (lsb * '"'); ((q-lsb)&^q)>>k&1 != 0 {
					return i + k>>3 + 1, nil // the first is the closing quote
				}
				i += k >> 3
				break
			}
			i += 8
		}
		if i >= len(b) {
			return 0, errTruncated
		}
		switch b[i] {
		case '"':
			return i + 1, nil
		case '\\':
			if i+1 >= len(b) {
				return 0, errTruncated
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return 0, errTruncated
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex[h] {
						return 0, &syntaxError{i, "invalid \\u escape"}
					}
				}
				i += 6
			default:
				return 0, &syntaxError{i, "invalid escape"}
			}
		default:
			return 0, &syntaxError{i, "control character in string"}
		}
	}
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

// scanNumber validates a JSON number. A number that runs to the end of the
// input is accepted: it can only be a top-level value, never inside an object.
func scanNumber(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errTruncated
	}
	if b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return 0, errTruncated
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return 0, &syntaxError{i, "invalid number"}
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return 0, numberEnd(b, j)
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return 0, numberEnd(b, j)
		}
		i = j
	}
	return i, nil
}

func numberEnd(b []byte, i int) error {
	if i >= len(b) {
		return errTruncated
	}
	return &syntaxError{i, "invalid number"}
}

// scanUint parses a non-negative integer that fits in a uint64.
func scanUint(b []byte, i int) (uint64, int, error) {
	start := i
	end, err := scanNumber(b, i)
	if err != nil {
		return 0, 0, err
	}
	var n uint64
	for _, c := range b[start:end] {
		if c < '0' || c > '9' {
			return 0, 0, &syntaxError{start, "Index is not an unsigned integer"}
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, 0, &syntaxError{start, "Index overflows uint64"}
		}
		n = n*10 + d
	}
	return n, end, nil
}

func scanLiteral(b []byte, i int, lit string) (int, error) {
	for k := 0; k < len(lit); k++ {
		if i+k >= len(b) {
			return 0, errTruncated
		}
		if b[i+k] != lit[k] {
			return 0, &syntaxError{i + k, "invalid literal"}
		}
	}
	return i + len(lit), nil
}

// spansOf appends to dst the located strings of ev for the topic whose bit
// is given, relative to the event's first byte.
func (p *frameParser) spansOf(dst []Span, ev eventSpan, bit uint64) []Span {
	for _, sp := range p.strs[ev.strs0:ev.strs1] {
		if sp.topics&bit != 0 {
			dst = append(dst, Span{sp.start - ev.start, sp.end - ev.start})
		}
	}
	return dst
}
