package nomadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The event stream's conformance: the frames Nomad 2.0.5 sent in B1 (and
// the Evaluation frame B2 saw) are published into the fake at their
// recorded indexes, and each recorded subscription of B1 to B3 is made
// again: the fake must send the same lines where the recording kept them
// verbatim, and the same frames, by index, in the same order, as Nomad
// did, and then nothing else (a marker published afterwards must be the
// next frame). B5's subscriptions (key filter, namespaces, an unknown
// topic, the two 400s) are replayed the same way against B5's frames
// (TestConformsToNomadStreamFilters). Timing is compared on a synctest
// clock, with the handler driven over a net.Pipe: B4's heartbeats with the
// fake's default 30 s (TestConformsToNomadHeartbeats), and E's refused
// subscriptions, 200 and then nothing until EOF
// (TestConformsToNomadRefusedStreams). Every 200 subscription's status
// line and headers are compared there. Exceptions, one line each:
//   - Nomad's own few ms (B4's `{}` at 0.002 s and 30.003 s): the fake may
//     be up to 10 ms early.
//   - E: Nomad closed the refused streams 30.55 s after the first opened,
//     the fake 30 s after (its heartbeat); compared: the same moment for
//     all, at most 1 s before Nomad's.

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
	for _, st := range Transcript(t, name) {
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
			replayStream(t, newFake(t, rp.sets...), rp.query, rp.body)
		})
	}
}

// replayStream subscribes to s as the recording did and compares the
// frames the fake sends with Nomad's.
func replayStream(t *testing.T, s *Server, query string, body streamBody) {
	t.Helper()
	r := subscribeRaw(t, s, query)
	for _, f := range body.Frames {
		if f.Heartbeat {
			continue
		}
		line, idx := r.next()
		if idx != f.Index {
			t.Fatalf("frame %d, Nomad sent %d", idx, f.Index)
		}
		if raw := body.Lines[f.Line].Raw; raw != "" && line != raw {
			t.Errorf("frame %d differs from Nomad's line:\n got %.300s\nwant %.300s", idx, line, raw)
		}
	}
	if !waited(body.End) {
		return // the recording did not wait for more
	}
	// Nothing else was sent (the recorder waited): the next frame must be
	// one published now, in a namespace every subscription of the
	// recordings sees.
	ns := "default"
	if strings.Contains(query, "namespace=other") {
		ns = "other"
	}
	key := "marker"
	if topic, k, ok := strings.Cut(strings.SplitN(query, "&", 2)[0], ":"); ok {
		key = k // a key filter: the marker is that key's
		_ = topic
	}
	marker := Event{Topic: "Job", Type: "JobRegistered", Key: key, Namespace: ns, Payload: json.RawMessage(`{}`)}
	if strings.HasPrefix(query, "topic=Bogus") {
		marker.Topic = "Bogus" // B5's unknown topic: a frame of it is the next
	}
	want := s.Publish(marker)
	if _, idx := r.next(); idx != want {
		t.Errorf("after Nomad's last frame the fake sent frame %d, want nothing before the marker %d", idx, want)
	}
}

// TestConformsToNomadStreamFilters replays B5: the frames of its widest
// subscription (topic=Job&namespace=*) are published into a fake that has
// namespaces default and other, and each subscription of B5 is made again:
// a key filter, no namespace parameter, namespace=* and namespace=other, an
// unknown topic (200, `{}`, no frame), and the two 400s, whose status,
// Content-Type, Content-Length and text must be Nomad's.
func TestConformsToNomadStreamFilters(t *testing.T) {
	steps := Transcript(t, "B5")
	var frames map[uint64][]Event
	for _, st := range streamSteps(t, "B5") {
		if strings.HasPrefix(st.query, "topic=Job&namespace=*&") {
			frames = recordedFrames(t, st.body)
		}
	}
	if len(frames) != 7 {
		t.Fatalf("B5's widest subscription has %d frames, want 7", len(frames))
	}
	for _, st := range streamSteps(t, "B5") { // the lines another subscription kept verbatim
		for i, f := range recordedFrames(t, st.body) {
			if len(f) > 0 && string(f[0].Payload) != "{}" {
				frames[i] = f
			}
		}
	}
	newFake := func(t *testing.T) *Server {
		s := StartT(t, Options{Heartbeat: time.Hour, Namespaces: []string{"default", "other"}})
		for idx := uint64(1); idx <= 446; idx++ {
			if evs, ok := frames[idx]; ok {
				s.PublishAt(idx, evs...)
			}
		}
		return s
	}
	for i, st := range steps {
		if st.Request == nil || !strings.HasPrefix(st.Request.Path, "/v1/event/stream?") {
			continue
		}
		query := strings.TrimPrefix(st.Request.Path, "/v1/event/stream?")
		t.Run(fmt.Sprintf("%d/%s", i, query), func(t *testing.T) {
			s := newFake(t)
			if st.Response.Status == http.StatusOK {
				var b streamBody
				if err := json.Unmarshal(st.Response.Body, &b); err != nil {
					t.Fatal(err)
				}
				replayStream(t, s, query, b)
				return
			}
			var want struct{ Text string }
			if err := json.Unmarshal(st.Response.Body, &want); err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get(s.URL + st.Request.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != st.Response.Status || string(got) != want.Text {
				t.Errorf("%d %q, Nomad %d %q", resp.StatusCode, got, st.Response.Status, want.Text)
			}
			if ct := resp.Header.Get("Content-Type"); ct != st.Response.Headers["Content-Type"] {
				t.Errorf("Content-Type %q, Nomad %q", ct, st.Response.Headers["Content-Type"])
			}
			if cl := resp.Header.Get("Content-Length"); cl != st.Response.StreamHeaders["Content-Length"] {
				t.Errorf("Content-Length %q, Nomad %q", cl, st.Response.StreamHeaders["Content-Length"])
			}
			if resp.Close {
				t.Error("Connection: close on a 400; Nomad keeps the connection")
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

// pipeWriter is an http.ResponseWriter whose Hijack hands the handler one
// end of a net.Pipe, so that a stream can be read inside a synctest bubble.
type pipeWriter struct {
	h    http.Header
	conn net.Conn
}

func (p *pipeWriter) Header() http.Header         { return p.h }
func (p *pipeWriter) WriteHeader(int)             {}
func (p *pipeWriter) Write(b []byte) (int, error) { return p.conn.Write(b) }
func (p *pipeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return p.conn, bufio.NewReadWriter(bufio.NewReader(p.conn), bufio.NewWriter(p.conn)), nil
}

// timedStream is what a subscription made in a bubble received.
type timedStream struct {
	mu    sync.Mutex
	resp  *http.Response
	lines []time.Duration // when each line came, since the request
	raw   []string
	eof   time.Duration // when the body ended; -1 while open
}

// openTimed subscribes to s inside a synctest bubble and reads the stream
// in the background, noting when each line and the end come.
func openTimed(t *testing.T, s *Server, path, token string) *timedStream {
	t.Helper()
	client, server := net.Pipe()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if token != "" {
		req.Header.Set("X-Nomad-Token", token)
	}
	go s.srv.Handler.ServeHTTP(&pipeWriter{h: http.Header{}, conn: server}, req)
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(client), req)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	ts := &timedStream{resp: resp, eof: -1}
	mu := &ts.mu
	go func() {
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			mu.Lock()
			if line != "" {
				ts.lines = append(ts.lines, time.Since(start))
				ts.raw = append(ts.raw, strings.TrimSuffix(line, "\n"))
			}
			if err != nil {
				ts.eof = time.Since(start)
				mu.Unlock()
				return
			}
			mu.Unlock()
		}
	}()
	t.Cleanup(func() { client.Close() })
	return ts
}

// streamHeaders compares a 200 subscription's status line and headers with
// what Nomad 2.0.5 sent (B1..B5, E): Connection: close, Cache-Control:
// no-cache, JSON, no length, not chunked, no X-Nomad-Index.
func streamHeaders(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	if resp.Proto != "HTTP/1.1" || resp.StatusCode != http.StatusOK {
		t.Errorf("%s: %s %s, Nomad HTTP/1.1 200 OK", what, resp.Proto, resp.Status)
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-cache", "X-Nomad-Index": ""} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %s %q, Nomad %q", what, k, got, v)
		}
	}
	if !resp.Close || resp.ContentLength != -1 || len(resp.TransferEncoding) != 0 {
		t.Errorf("%s: close %v, length %d, transfer encoding %v; Nomad: Connection: close, neither length nor chunking", what, resp.Close, resp.ContentLength, resp.TransferEncoding)
	}
}

// closeTo reports whether the fake's moment got is the recorded one, or
// at most 10 ms before it (Nomad's own few ms: B4's `{}` at 0.002 s and
// 30.003 s, the fake's at 0 and 30 s).
func closeTo(got time.Duration, rec float64) bool {
	want := time.Duration(rec * float64(time.Second))
	return got <= want && got >= want-10*time.Millisecond
}

// TestConformsToNomadHeartbeats replays B4 on a fake clock with the fake's
// default heartbeat (Nomad's 30 s): an idle stream gets `{}` at once and
// again 30 s later, and nothing else in the 35 s the recorder held it.
func TestConformsToNomadHeartbeats(t *testing.T) {
	st := Transcript(t, "B4")[0]
	var rec streamBody
	if err := json.Unmarshal(st.Response.Body, &rec); err != nil {
		t.Fatal(err)
	}
	var times struct {
		Lines []struct {
			T float64 `json:"t_s"`
		} `json:"lines"`
	}
	if err := json.Unmarshal(st.Response.Body, &times); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		s := NewWithListener(nopListener{}, Options{})
		defer s.Close()
		ts := openTimed(t, s, st.Request.Path, "")
		streamHeaders(t, "B4", ts.resp)
		time.Sleep(35001 * time.Millisecond)
		synctest.Wait()
		ts.mu.Lock()
		defer ts.mu.Unlock()
		if len(ts.lines) != len(rec.Lines) || ts.eof != -1 {
			t.Fatalf("lines %q at %v (end %v), Nomad %d lines and the stream still open", ts.raw, ts.lines, ts.eof, len(rec.Lines))
		}
		for i, l := range rec.Lines {
			if ts.raw[i] != l.Raw || !closeTo(ts.lines[i], times.Lines[i].T) {
				t.Errorf("line %d %q at %v, Nomad %q at %.3f s", i, ts.raw[i], ts.lines[i], l.Raw, times.Lines[i].T)
			}
		}
	})
}

// TestConformsToNomadRefusedStreams replays E's subscriptions on a fake
// clock: the fake refuses every token but the management one, as the
// recording's ACL agent did for no token, a bogus token and a token
// without job read. Each refused stream gets Nomad's 200 and headers,
// then not one byte until EOF, and all of them end at the same moment,
// 30 s (the heartbeat) after the first was opened; the management token
// gets `{}` at once.
func TestConformsToNomadRefusedStreams(t *testing.T) {
	const management = "42c92abe-ac54-2991-3558-41db47ce17d3" // E's bootstrap token
	recorded := Transcript(t, "E")
	sort.SliceStable(recorded, func(i, j int) bool { return recorded[i].T < recorded[j].T })
	synctest.Test(t, func(t *testing.T) {
		s := NewWithListener(nopListener{}, Options{Authorize: func(tok string) bool { return tok == management }})
		defer s.Close()
		start := time.Now()
		type open struct {
			note    string
			at      time.Duration
			eofRec  float64 // seconds into the scenario; 0: open when the recorder closed it
			body    streamBody
			stream  *timedStream
			refused bool
		}
		var opens []open
		for _, st := range recorded {
			if st.Request == nil || !strings.HasPrefix(st.Request.Path, "/v1/event/stream?") {
				continue
			}
			time.Sleep(time.Until(start.Add(time.Duration(st.T * float64(time.Second)))))
			o := open{note: st.Note, at: time.Since(start)}
			if err := json.Unmarshal(st.Response.Body, &o.body); err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(o.body.End, "EOF") {
				o.refused, o.eofRec = true, st.T+st.Elapsed
			}
			o.stream = openTimed(t, s, st.Request.Path, st.Request.Headers["X-Nomad-Token"])
			streamHeaders(t, st.Note, o.stream.resp)
			opens = append(opens, o)
		}
		time.Sleep(time.Until(start.Add(35 * time.Second)))
		synctest.Wait()
		var first time.Duration = -1
		for _, o := range opens {
			ts := o.stream
			ts.mu.Lock()
			defer ts.mu.Unlock()
			if !o.refused {
				// The recorder read it 2 s: `{}` at once, then nothing.
				if ts.eof != -1 || len(ts.raw) == 0 || ts.raw[0] != "{}" || !closeTo(ts.lines[0], 0.001) || (len(ts.lines) > 1 && ts.lines[1] <= 2*time.Second) {
					t.Errorf("%s: lines %q at %v, end %v; Nomad `{}` at 0.001 s and nothing else in 2 s", o.note, ts.raw, ts.lines, ts.eof)
				}
				continue
			}
			if len(ts.raw) != 0 || ts.eof < 0 {
				t.Errorf("%s: lines %q, end %v; Nomad: nothing, then EOF", o.note, ts.raw, ts.eof)
				continue
			}
			end := o.at + ts.eof
			if first < 0 {
				first = end
			}
			if end != first {
				t.Errorf("%s: ended %v into the scenario, the first refused stream at %v; Nomad ended all at the same moment", o.note, end, first)
			}
			// Nomad: 30.55 s into the scenario, 30 s and its own 0.55 s
			// after the first opened (0.006 s in).
			if rec := time.Duration(o.eofRec * float64(time.Second)); end > rec || end < rec-time.Second {
				t.Errorf("%s: ended %v into the scenario, Nomad %v", o.note, end, rec)
			}
		}
	})
}
