package nomadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The event stream's conformance: the frames Nomad 2.0.5 sent in B1 (and
// the Evaluation frame B2 saw) are published into the fake at their
// recorded indexes, and each recorded subscription of B1 to B3 is made
// again: the fake must send the same lines where the recording kept them
// verbatim, and the same frames, by index, in the same order, as Nomad
// did, and then nothing else (a marker published afterwards must be the
// next frame). Timing is not compared (B4's 30 s heartbeat is the fake's
// default interval).

type streamBody struct {
	Lines []struct {
		Raw     string `json:"raw"`
		RawHead string `json:"raw_head"`
	} `json:"lines"`
	Frames []struct {
		Heartbeat bool   `json:"heartbeat"`
		Index     uint64 `json:"Index"`
		Line      int    `json:"line"`
		Events    []struct {
			Topic, Type, Key, Namespace string
			FilterKeys                  []string
		} `json:"events"`
	} `json:"frames"`
	End string `json:"end"`
}

func streamSteps(t *testing.T, name string) []struct {
	query string
	body  streamBody
} {
	t.Helper()
	var out []struct {
		query string
		body  streamBody
	}
	for _, st := range readTranscript(t, name) {
		if st.Request == nil || !strings.HasPrefix(st.Request.Path, "/v1/event/stream?") {
			continue
		}
		var b streamBody
		if err := json.Unmarshal(st.Response.Body, &b); err != nil {
			t.Fatalf("%s %s: %v", name, st.Request.Path, err)
		}
		out = append(out, struct {
			query string
			body  streamBody
		}{strings.TrimPrefix(st.Request.Path, "/v1/event/stream?"), b})
	}
	return out
}

// recordedFrames returns the frames of a recorded stream as events to
// publish: verbatim where the recording kept the line, else rebuilt from
// its summary with an empty payload.
func recordedFrames(t *testing.T, b streamBody) map[uint64][]Event {
	t.Helper()
	out := map[uint64][]Event{}
	for _, f := range b.Frames {
		if f.Heartbeat {
			continue
		}
		if raw := b.Lines[f.Line].Raw; raw != "" {
			var fr struct{ Events []Event }
			if err := json.Unmarshal([]byte(raw), &fr); err != nil {
				t.Fatal(err)
			}
			out[f.Index] = fr.Events
			continue
		}
		var evs []Event
		for _, e := range f.Events {
			evs = append(evs, Event{Topic: e.Topic, Type: e.Type, Key: e.Key, Namespace: e.Namespace, FilterKeys: e.FilterKeys, Payload: json.RawMessage(`{}`)})
		}
		out[f.Index] = evs
	}
	return out
}

// subscription is one open stream of the fake, read line by line.
type subscriptionReader struct {
	t  *testing.T
	br *bufio.Reader
}

func subscribeRaw(t *testing.T, s *Server, query string) *subscriptionReader {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+"/v1/event/stream?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d", query, resp.StatusCode)
	}
	return &subscriptionReader{t: t, br: bufio.NewReaderSize(resp.Body, 1<<20)}
}

// next returns the next line that is a frame (heartbeats skipped) and its
// index.
func (r *subscriptionReader) next() (string, uint64) {
	r.t.Helper()
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("reading the stream: %v", err)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "{}" {
			continue
		}
		var f struct{ Index uint64 }
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			r.t.Fatalf("line %q: %v", line, err)
		}
		return line, f.Index
	}
}

func TestConformsToNomadEventStream(t *testing.T) {
	b1 := streamSteps(t, "B1")
	b2 := streamSteps(t, "B2")
	b3 := streamSteps(t, "B3")
	// The frames the recording's agent held when B2 ran: B1's, and the
	// Evaluation frame at 112 that B2's topic=* subscription got.
	frames := recordedFrames(t, b1[0].body)
	for i, f := range recordedFrames(t, b2[len(b2)-1].body) {
		frames[i] = f
	}
	// B3: 160 registrations at 114..273, one Job frame each.
	b3Frames := map[uint64][]Event{}
	for i := uint64(114); i <= 273; i++ {
		b3Frames[i] = []Event{{Topic: "Job", Type: "JobRegistered", Key: fmt.Sprintf("rec-b3-%03d", i-114), Namespace: "default", Payload: json.RawMessage(`{}`)}}
	}
	for _, st := range b3 { // the lines B3 kept verbatim
		for i, f := range recordedFrames(t, st.body) {
			if len(f) > 0 && string(f[0].Payload) != "{}" {
				b3Frames[i] = f
			}
		}
	}

	// newFake publishes the frames in index order; Nomad's buffer size
	// (event_buffer_size) is the fake's default.
	newFake := func(t *testing.T, sets ...map[uint64][]Event) *Server {
		s := StartT(t, Options{Heartbeat: time.Hour})
		for idx := uint64(1); idx <= 273; idx++ {
			for _, set := range sets {
				if evs, ok := set[idx]; ok {
					s.PublishAt(idx, evs...)
				}
			}
		}
		return s
	}

	type replay struct {
		name  string
		query string
		body  streamBody
		sets  []map[uint64][]Event
	}
	var replays []replay
	for _, st := range b1 {
		replays = append(replays, replay{"B1", st.query, st.body, []map[uint64][]Event{frames}})
	}
	for _, st := range b2 {
		replays = append(replays, replay{"B2", st.query, st.body, []map[uint64][]Event{frames}})
	}
	for _, st := range b3 {
		replays = append(replays, replay{"B3", st.query, st.body, []map[uint64][]Event{frames, b3Frames}})
	}
	for _, rp := range replays {
		t.Run(rp.name+"/"+rp.query, func(t *testing.T) {
			s := newFake(t, rp.sets...)
			r := subscribeRaw(t, s, rp.query)
			for _, f := range rp.body.Frames {
				if f.Heartbeat {
					continue
				}
				line, idx := r.next()
				if idx != f.Index {
					t.Fatalf("frame %d, Nomad sent %d", idx, f.Index)
				}
				if raw := rp.body.Lines[f.Line].Raw; raw != "" && line != raw {
					t.Errorf("frame %d differs from Nomad's line:\n got %.300s\nwant %.300s", idx, line, raw)
				}
			}
			if !waited(rp.body.End) {
				return // the recording did not wait for more
			}
			// Nothing else was sent (the recorder waited): the next frame
			// must be one published now.
			marker := Event{Topic: "Job", Type: "JobRegistered", Key: "marker", Namespace: "default", Payload: json.RawMessage(`{}`)}
			want := s.Publish(marker)
			if _, idx := r.next(); idx != want {
				t.Errorf("after Nomad's last frame the fake sent frame %d, want nothing before the marker %d", idx, want)
			}
		})
	}
}

// waited reports whether a recorded stream's end says the recorder kept it
// open long enough (a second or more) for anything else to have come.
func waited(end string) bool {
	var secs float64
	if _, err := fmt.Sscanf(end, "still open; closed by recorder at %fs", &secs); err != nil {
		return false
	}
	return secs >= 1
}
