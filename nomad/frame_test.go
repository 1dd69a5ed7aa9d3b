package nomad

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/bits"
	"strings"
	"testing"
)

func TestParseFrame(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		line      string
		heartbeat bool
		index     uint64
		topics    []string
		compact   []bool
	}{
		{"heartbeat", `{}`, true, 0, nil, nil},
		{"heartbeat with spaces", " { } \r", true, 0, nil, nil},
		{"zero frame is a heartbeat", `{"Index":0,"Events":null}`, true, 0, nil, nil},
		{"frame", `{"Index":12,"Events":[{"Topic":"Job","Type":"JobRegistered","Key":"web","Namespace":"default","FilterKeys":null,"Index":12,"Payload":{"Job":{"ID":"web"}}}]}`,
			false, 12, []string{"Job"}, []bool{true}},
		{"two events, keys reordered", `{"Events":[{"Payload":{"a":[1,2.5e-3,true,null]},"Topic":"Allocation"},{"Topic":"Node","Key":"n\"1"}],"Index":7}`,
			false, 7, []string{"Allocation", "Node"}, []bool{true, true}},
		{"whitespace inside an event", `{"Index":3,"Events":[ {"Topic": "Job", "Payload": {}} ]}`,
			false, 3, []string{"Job"}, []bool{false}},
		{"unknown member skipped", `{"Index":4,"Other":{"x":[{}]},"Events":[{"Topic":"Job"}]}`, false, 4, []string{"Job"}, []bool{true}},
		{"unicode escape in a string", `{"Index":5,"Events":[{"Topic":"Job","Key":"\u00e9<>&"}]}`, false, 5, []string{"Job"}, []bool{true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var p frameParser
			if err := p.parse([]byte(tt.line)); err != nil {
				t.Fatalf("parse: %v", err)
			}
			if p.heartbeat != tt.heartbeat || p.index != tt.index {
				t.Errorf("got heartbeat %v index %d, want %v %d", p.heartbeat, p.index, tt.heartbeat, tt.index)
			}
			if len(p.events) != len(tt.topics) {
				t.Fatalf("got %d events, want %d", len(p.events), len(tt.topics))
			}
			for i, ev := range p.events {
				raw := tt.line[ev.start:ev.end]
				if !json.Valid([]byte(raw)) || raw[0] != '{' {
					t.Errorf("event %d: got span %q, want one JSON object", i, raw)
				}
				if got := tt.line[ev.topicStart:ev.topicEnd]; got != tt.topics[i] {
					t.Errorf("event %d: got topic %q, want %q", i, got, tt.topics[i])
				}
				if ev.compact != tt.compact[i] {
					t.Errorf("event %d: got compact %v, want %v", i, ev.compact, tt.compact[i])
				}
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line    string
		notJSON bool
	}{
		{"", true},
		{"subscription closed by server, client should resubscribe", true},
		{"ACL token expired", true},
		{`[1]`, true},
		{`{"Index":-1,"Events":[]}`, false},
		{`{"Index":1.5,"Events":[]}`, false},
		{`{"Index":18446744073709551616,"Events":[]}`, false},
		{`{"Index":1,"Events":{}}`, false},
		{`{"Index":1,"Events":[1]}`, false},
		{`{"Index":1,"Events":[]}x`, false},
		{`{"Index":1,"Events":[{"Topic":"Job","P":tru}]}`, false},
		{`{"Index":1,"Events":[{"Topic":"Job","P":"a` + "\x01" + `"}]}`, false},
		{`{"Index":1,"Events":[{"Topic":"Job","P":"\x"}]}`, false},
		{`{"Index":1,"Events":[{"Topic":"Job","P":01}]}`, false},
		{`{"Index":1,"Events":[{"Topic":"Job",}]}`, false},
	}
	for _, tt := range tests {
		var p frameParser
		err := p.parse([]byte(tt.line))
		if err == nil {
			t.Errorf("parse(%q): got no error, want one", tt.line)
			continue
		}
		if got := errors.Is(err, errNotJSON); got != tt.notJSON {
			t.Errorf("parse(%q): got error %v (not JSON: %v), want not JSON: %v", tt.line, err, got, tt.notJSON)
		}
	}
}

// A frame cut anywhere is never taken for a whole one.
func TestParseEveryPrefixFails(t *testing.T) {
	t.Parallel()
	line := `{"Index":18446744073709551615,"Events":[{"Topic":"Job","Type":"JobRegistered","Key":"w\"e\\b\u00e9","Namespace":"default",` +
		`"FilterKeys":["a","b"],"Index":9,"Payload":{"Job":{"SubmitTime":1757000000000000001,"F":-1.5e+10,"T":true,"N":null,"A":[],"O":{}}}},{"Topic":"Node"}]}`
	var p frameParser
	if err := p.parse([]byte(line)); err != nil {
		t.Fatalf("whole line: %v", err)
	}
	for n := 1; n < len(line); n++ {
		if err := p.parse([]byte(line[:n])); err == nil {
			t.Errorf("prefix of %d bytes %q: got no error, want one", n, line[:n])
		}
	}
}

// The validator agrees with encoding/json on any value.
func FuzzValue(f *testing.F) {
	for _, s := range []string{`{}`, `[]`, `{"a":[1,-0.5e7,"x\u0041\n",true,false,null,{}]}`, `"\ud800"`, `1e`, `-`, `01`, `[1,]`, `{"a" 1}`, ` 0 `, "\"\x7f\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var p frameParser
		i := p.ws(b, 0)
		end, err := p.value(b, i, 1, nil, 0)
		ok := err == nil && i < len(b) && p.ws(b, end) == len(b)
		if want := json.Valid(b); ok != want {
			t.Errorf("value(%q): got valid %v (%v), want %v", b, ok, err, want)
		}
	})
}

func TestFuzzSeedsCoverTruncation(t *testing.T) {
	t.Parallel()
	var p frameParser
	for _, s := range []string{`{"a":`, `[1,2`, `"abc`, `tru`, `-`, `1.`, `1e+`, `"\u12`} {
		if _, err := p.value([]byte(s), 0, 1, nil, 0); !errors.Is(err, errTruncated) {
			t.Errorf("value(%q): got %v, want %v", s, err, errTruncated)
		}
	}
	deep := strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1)
	if _, err := p.value([]byte(deep), 0, 1, nil, 0); err == nil {
		t.Errorf("nesting of %d: got no error, want one", maxDepth+1)
	}
}

// special8 finds the first byte a string scan must look at, whatever the
// bytes around it: every byte value at every position, with every byte value
// after it (a borrow runs upwards only) and plain bytes before it.
func TestSpecial8(t *testing.T) {
	t.Parallel()
	special := func(c byte) bool { return c < 0x20 || c == '"' || c == '\\' }
	for k := range 8 {
		for v := range 256 {
			for w := range 256 {
				var word [8]byte
				for j := range word {
					switch {
					case j < k:
						word[j] = 'a' + byte(j)
					case j == k:
						word[j] = byte(v)
					default:
						word[j] = byte(w)
					}
				}
				m := special8(binary.LittleEndian.Uint64(word[:]))
				first := 8
				for j, c := range word {
					if special(c) {
						first = j
						break
					}
				}
				got := 8
				if m != 0 {
					got = bits.TrailingZeros64(m) >> 3
				}
				if got != first {
					t.Fatalf("special8(%q): first special byte at %d, want %d", word, got, first)
				}
			}
		}
	}
}
