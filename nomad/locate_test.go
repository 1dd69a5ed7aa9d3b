package nomad

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestNewLocatorRefuses(t *testing.T) {
	t.Parallel()
	for _, f := range []Fields{
		{"Job": {"Payload.*.a", "Payload.Job.b"}}, // a key beside * at one level
		{"Job": {"Payload..a"}},
		{"Job": {""}},
	} {
		if _, err := NewLocator(f); err == nil {
			t.Errorf("NewLocator(%v): got no error, want one", f)
		}
	}
	many := Fields{}
	for i := range 65 {
		many[fmt.Sprint("T", i)] = []string{"Payload"}
	}
	if _, err := NewLocator(many); err == nil {
		t.Error("65 topics: got no error, want one")
	}
}

// Every string value inside a named field is located, however deep, keys
// not; a field named for one topic is not located in another's events.
func TestLocatorStrings(t *testing.T) {
	t.Parallel()
	l, err := NewLocator(Fields{
		"A": {"Payload.x", "Payload.list.*.s"},
		"B": {"Payload.q.*"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		topic, event string
		want         []string
	}{
		{"A", `{"Payload":{"x":"s1","z":{"y":"no"}},"Topic":"A"}`, []string{`"s1"`}},
		{"A", `{"Payload":{"x":{"k":["s1",1,{"deep":"s\"2"}],"j":null}}}`, []string{`"s1"`, `"s\"2"`}},
		{"A", `{"Payload":{"list":[{"s":"a"},{"t":"no"},{"s":["b"]}]}}`, []string{`"a"`, `"b"`}},
		{"A", `{"Payload":{"x":7,"list":[]}}`, nil},
		{"B", `{"Payload":{"q":{"y":["u",{"k":"v"}]},"x":"no"}}`, []string{`"u"`, `"v"`}},
		{"C", `{"Payload":{"x":"no","q":{"y":"no"}}}`, nil},
		{"A", `{ "Payload" : { "x" : "s1" } }`, []string{`"s1"`}},
	}
	for _, tt := range tests {
		spans, err := l.Strings(nil, tt.topic, []byte(tt.event))
		if err != nil {
			t.Fatalf("%s %s: %v", tt.topic, tt.event, err)
		}
		var got []string
		for _, sp := range spans {
			got = append(got, tt.event[sp.Start:sp.End])
		}
		if strings.Join(got, " ") != strings.Join(tt.want, " ") {
			t.Errorf("%s %s: got %q, want %q", tt.topic, tt.event, got, tt.want)
		}
	}
	if _, err := l.Strings(nil, "A", []byte(`{"Payload":{"x":"s1"`)); err == nil {
		t.Error("a cut event: got no error, want one")
	}
}

// A Streamer with Locate hands each event's strings over, and Lines with
// Replace writes them replaced; an event sent with blanks is compacted and
// its strings found again in the compacted bytes.
func TestStreamerLocates(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "{}\n"+
			`{"Events":[{"Payload":{"Job":{"Env":{"K":"secret"},"Name":"web"}},"Topic":"Job"},{"Payload":{"Job":{"Env":{"K":"x"}}},"Topic":"Node"}],"Index":4}`+"\n"+
			`{"Index": 5, "Events": [ {"Topic": "Job", "Payload": {"Job": {"Env": {"K": "s e c"}, "Name": "db"}} } ]}`+"\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	l, err := NewLocator(Fields{"Job": {"Payload.Job.Env"}})
	if err != nil {
		t.Fatal(err)
	}
	out := newLineSink()
	r := startStreamer(t, ts.URL, nil, Config{Locate: l}, NewLines(out, LinesOptions{Replace: []byte(`"R"`)}), Position{Index: 0})
	got := out.wait(t, 3)
	r.stop(t)
	diffLines(t, got, []string{
		`{"Payload":{"Job":{"Env":{"K":"R"},"Name":"web"}},"Topic":"Job"}`,
		`{"Payload":{"Job":{"Env":{"K":"x"}}},"Topic":"Node"}`,
		`{"Topic":"Job","Payload":{"Job":{"Env":{"K":"R"},"Name":"db"}}}`,
	})
}
