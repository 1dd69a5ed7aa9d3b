package nomad

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// smallEvent is an event with a payload holding numbers above 2^53.
func smallEvent(topic, key string, i int) nomadtest.Event {
	return nomadtest.Event{
		Topic: topic, Type: topic + "Updated", Key: key, Namespace: "default",
		Payload: json.RawMessage(fmt.Sprintf(`{"%s":{"ID":%q,"N":%d,"ModifyTime":%d,"Note":"<a&b>"}}`, topic, key, i, int64(1757000000000000001)+int64(i))),
	}
}

// Under cuts at random places, every event is written exactly once, with
// each framing and whatever the read buffer's size: smaller than a frame
// (every frame read in pieces), the default, eventlog's 1 MiB.
func TestExactlyOnceUnderRandomCuts(t *testing.T) {
	t.Parallel()
	type run struct {
		mode nomadtest.Mode
		read int
	}
	runs := []run{{nomadtest.CloseDelimited, 0}, {nomadtest.Chunked, 0}, {nomadtest.CloseDelimited, 100}, {nomadtest.CloseDelimited, 1 << 20}}
	for _, rn := range runs {
		mode := rn.mode
		t.Run(fmt.Sprintf("%s/read=%d", mode, rn.read), func(t *testing.T) {
			t.Parallel()
			const wantCuts, frames = 100, 1500
			var mu sync.Mutex
			rnd := rand.New(rand.NewPCG(uint64(mode), 42+uint64(rn.read)))
			cuts, countdown := 0, 1
			cut := func() nomadtest.Cut {
				mu.Lock()
				defer mu.Unlock()
				if cuts == wantCuts {
					return nomadtest.Cut{}
				}
				if countdown--; countdown > 0 {
					return nomadtest.Cut{}
				}
				countdown = 1 + rnd.IntN(10)
				cuts++
				return nomadtest.Cut{Where: nomadtest.CutWhere(1 + rnd.IntN(3)), Frac: rnd.Float64()}
			}
			srv := startServer(t, nomadtest.Options{Mode: mode, BufferSize: 2 * frames, Cut: cut})
			out := newLineSink()
			r := startStreamer(t, srv.URL, nil, Config{ReadBufferSize: rn.read}, out, Position{Index: 0})

			var want []string
			for i := range frames {
				evs := []nomadtest.Event{smallEvent("Job", fmt.Sprint("job", i), i)}
				if i%3 == 0 {
					evs = append(evs, smallEvent("Allocation", fmt.Sprint("alloc", i), i))
				}
				idx := srv.Publish(evs...)
				want = append(want, expect(idx, evs...)...)
				if i%20 == 19 {
					out.wait(t, len(want)/2) // let events flow while cuts happen
				}
			}
			got := out.wait(t, len(want))
			if err := r.stop(t); err != nil {
				t.Errorf("Run: got %v, want nil", err)
			}
			diffLines(t, got, want)
			if srv.Cuts() != wantCuts {
				t.Errorf("got %d cuts, want %d", srv.Cuts(), wantCuts)
			}
			snap := r.st.Stats().Snapshot()
			if snap.Gaps != 0 || snap.Resets != 0 {
				t.Errorf("got %d gaps and %d resets, want none", snap.Gaps, snap.Resets)
			}
			if snap.Reconnects < wantCuts {
				t.Errorf("got %d reconnects, want at least %d", snap.Reconnects, wantCuts)
			}
			if snap.FlushedIndex != uint64(frames) {
				t.Errorf("got flushed index %d, want %d", snap.FlushedIndex, frames)
			}
		})
	}
}

func TestFrozenConnectionResumes(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	out := newLineSink()
	r := startStreamer(t, srv.URL, nil, Config{HeartbeatTimeout: 200 * time.Millisecond}, out, Position{Index: 0})
	var want []string
	for i := range 3 {
		e := smallEvent("Job", fmt.Sprint("a", i), i)
		want = append(want, expect(srv.Publish(e), e)...)
	}
	out.wait(t, 3)
	srv.FreezeAll()
	for i := range 3 {
		e := smallEvent("Job", fmt.Sprint("b", i), i)
		want = append(want, expect(srv.Publish(e), e)...)
	}
	got := out.wait(t, 6)
	r.logs.wait(t, "no frame and no heartbeat")
	r.stop(t)
	diffLines(t, got, want)
	if n := r.st.Stats().Snapshot().Reconnects; n < 1 {
		t.Errorf("got %d reconnects, want at least 1", n)
	}
}

func TestGapReportedWithRange(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{BufferSize: 4}) // keeps 5, as Nomad keeps size+1
	out := newLineSink()
	h := newRecorder(out)
	r := startStreamer(t, srv.URL, nil, Config{}, h, Position{Index: 0})
	var want []string
	for i := range 3 {
		e := smallEvent("Job", fmt.Sprint("a", i), i)
		want = append(want, expect(srv.Publish(e), e)...)
	}
	out.wait(t, 3)
	srv.SetFailStatus(http.StatusInternalServerError)
	srv.DropAll()
	var frames []nomadtest.Event
	for i := range 20 { // indexes 4..23; the buffer keeps 19..23
		e := smallEvent("Job", fmt.Sprint("b", i), i)
		frames = append(frames, e)
		srv.Publish(e)
	}
	for k, e := range frames[15:] {
		want = append(want, expect(uint64(19+k), e)...)
	}
	srv.SetFailStatus(0)
	got := out.wait(t, len(want))
	rec := r.logs.wait(t, "WARN gap in the event stream", "last_written=3", "first_received=19")
	r.stop(t)
	diffLines(t, got, want)
	if n := r.st.Stats().Snapshot().Gaps; n != 1 {
		t.Errorf("got %d gaps, want 1 (%s)", n, rec)
	}
	// The Handler is told: the gap with its range, the subscription up,
	// down when it was dropped (and while it was refused), and up again.
	h.mu.Lock()
	defer h.mu.Unlock()
	if want := []Discontinuity{{Kind: Gap, Last: 3, Next: 19}}; !slices.Equal(h.disc, want) {
		t.Errorf("got discontinuities %+v, want %+v", h.disc, want)
	}
	if h.ups < 2 || len(h.downs) < 1 {
		t.Errorf("got %d ups and %d downs, want at least 2 and 1", h.ups, len(h.downs))
	}
}

func TestHistoryResetReported(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	out := newLineSink()
	r := startStreamer(t, srv.URL, nil, Config{}, out, Position{Index: 0})
	var want []string
	for i := range 10 {
		e := smallEvent("Job", fmt.Sprint("old", i), i)
		want = append(want, expect(srv.Publish(e), e)...)
	}
	out.wait(t, 10)
	srv.SetFailStatus(http.StatusServiceUnavailable)
	srv.Reset(1)
	var last nomadtest.Event
	for i := range 3 {
		last = smallEvent("Job", fmt.Sprint("new", i), i)
		srv.Publish(last)
	}
	want = append(want, expect(3, last)...) // Nomad starts at its newest frame
	srv.SetFailStatus(0)
	e := smallEvent("Job", "after", 0)
	out.wait(t, len(want))
	want = append(want, expect(srv.Publish(e), e)...)
	got := out.wait(t, len(want))
	r.logs.wait(t, "WARN Nomad's event history went backwards", "last_written=10", "first_received=3")
	r.stop(t)
	diffLines(t, got, want)
	if n := r.st.Stats().Snapshot().Resets; n != 1 {
		t.Errorf("got %d resets, want 1", n)
	}
}

func TestRefusedAndErrorTails(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		mode    nomadtest.Mode
		token   string
		tail    string // CloseAll with this once live
		want    []string
		refused bool
		// heartbeat is the fake's interval, after which it also closes a
		// refused stream (E); timeout is the reader's HeartbeatTimeout.
		heartbeat, timeout time.Duration
	}{
		// Nomad closes a refused stream about 30 s after its silent 200.
		{"bad token, close-delimited", nomadtest.CloseDelimited, "bad", "",
			[]string{"ERROR event stream down", "before its first heartbeat", "refused or the token has no permission", "check the token"}, true,
			50 * time.Millisecond, time.Hour},
		// The reader's bound comes first: still refused, not "dead".
		{"bad token, silent past the heartbeat bound", nomadtest.CloseDelimited, "bad", "",
			[]string{"ERROR event stream down", "sent nothing, not even a heartbeat, for 200ms", "refused or the token has no permission"}, true,
			time.Hour, 200 * time.Millisecond},
		{"bad token, chunked", nomadtest.Chunked, "bad", "",
			[]string{"ERROR event stream down", "403 Forbidden: Permission denied"}, true, 0, 0},
		{"subscription closed", nomadtest.Chunked, "good", "subscription closed by server, client should resubscribe",
			[]string{"WARN event stream down", `"subscription closed by server, client should resubscribe"`, "resubscribing"}, false, 0, 0},
		{"token expired", nomadtest.Chunked, "good", "ACL token expired",
			[]string{"ERROR event stream down", `"ACL token expired"`, "reading it again"}, true, 0, 0},
		{"dropped from buffer", nomadtest.Chunked, "good", "event dropped from buffer",
			[]string{"WARN event stream down", `"event dropped from buffer"`, "fell too far behind"}, false, 0, 0},
		{"permission denied", nomadtest.Chunked, "good", "Permission denied",
			[]string{"ERROR event stream down", `"Permission denied"`, "may not read"}, true, 0, 0},
		{"close-delimited EOF", nomadtest.CloseDelimited, "good", "ignored",
			[]string{"WARN event stream down", "Nomad closed the stream ("}, false, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, nomadtest.Options{Mode: tt.mode, Heartbeat: tt.heartbeat, Authorize: func(tok string) bool { return tok == "good" }})
			e := smallEvent("Job", "web", 1)
			srv.Publish(e)
			out := newLineSink()
			token := func() (string, error) { return tt.token, nil }
			r := startStreamer(t, srv.URL, token, Config{HeartbeatTimeout: tt.timeout}, out, Position{Index: 0})
			if tt.tail != "" {
				out.wait(t, 1)
				r.logs.wait(t, "INFO event stream subscribed")
				srv.CloseAll(tt.tail)
			}
			rec := r.logs.wait(t, tt.want...)
			if tt.tail != "" {
				r.logs.wait(t, "INFO event stream resumed", "attempts=1")
			}
			r.stop(t)
			if got := r.st.Stats().Snapshot().Refusals > 0; got != tt.refused {
				t.Errorf("got refused %v, want %v (%s)", got, tt.refused, rec)
			}
			if tt.tail != "" {
				diffLines(t, out.wait(t, 1), expect(1, e))
			}
		})
	}
}

func TestTokenReadAgainOnReconnect(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	valid, current := "a", "a"
	srv := startServer(t, nomadtest.Options{Mode: nomadtest.Chunked, Authorize: func(tok string) bool {
		mu.Lock()
		defer mu.Unlock()
		return tok == valid
	}})
	token := func() (string, error) {
		mu.Lock()
		defer mu.Unlock()
		return current, nil
	}
	out := newLineSink()
	r := startStreamer(t, srv.URL, token, Config{}, out, Position{Index: 0})
	e1 := smallEvent("Job", "one", 1)
	srv.Publish(e1)
	out.wait(t, 1)
	mu.Lock()
	valid, current = "b", "b" // the workload identity rotated
	mu.Unlock()
	srv.CloseAll("ACL token expired")
	e2 := smallEvent("Job", "two", 2)
	srv.Publish(e2)
	got := out.wait(t, 2)
	r.stop(t)
	diffLines(t, got, append(expect(1, e1), expect(2, e2)...))
	var tokens []string
	for _, req := range srv.Requests() {
		tokens = append(tokens, req.Token)
	}
	if len(tokens) < 2 || tokens[0] != "a" || tokens[len(tokens)-1] != "b" {
		t.Errorf("got tokens %v, want a first and b last", tokens)
	}
}

func TestBigFrameAndExactBytes(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	big := nomadtest.Event{
		Topic: "Job", Type: "JobRegistered", Key: "big", Namespace: "default", FilterKeys: []string{"x"},
		Payload: json.RawMessage(`{"Job":{"Blob":"` + strings.Repeat("0123456789abcdef", 5<<20/16) + `","SubmitTime":9007199254740993,` +
			`"Max":18446744073709551615,"Min":-9223372036854775808,"F":1.0000000000000002,"E":1e400,"Esc":"\u00e9\n<>&"}}`),
	}
	alloc := nomadtest.AllocationEvent(7, "big", "default")
	srv.Publish(big, alloc)
	out := newLineSink()
	r := startStreamer(t, srv.URL, nil, Config{}, out, Position{Index: 0})
	got := out.wait(t, 2)
	r.stop(t)
	diffLines(t, got, expect(1, big, alloc))
	if !strings.Contains(got[0], `"SubmitTime":9007199254740993,"Max":18446744073709551615,`) {
		t.Errorf("numbers above 2^53 changed: got %.200s", got[0][len(got[0])-200:])
	}
	if len(got[0]) < 5<<20 {
		t.Errorf("got a %d-byte line, want over 5 MiB", len(got[0]))
	}
}

func TestDuplicateEventsInAFrameWrittenOnce(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	a := smallEvent("Allocation", "a1", 1)
	a.FilterKeys = []string{"web", "eval1"}
	b := smallEvent("Allocation", "a2", 2)
	b.FilterKeys = []string{"web"}
	srv.Publish(a, b)
	out := newLineSink()
	r := startStreamer(t, srv.URL, nil, Config{Subscription: Subscription{Topics: []string{"Allocation:web", "Allocation:eval1"}}}, out, Position{Index: 0})
	out.wait(t, 2)
	// The Job event is not subscribed to. Frames arrive in order, so once the
	// Allocation published after it is written, the Job event would be too
	// had it been sent.
	srv.Publish(smallEvent("Job", "web", 3))
	c := smallEvent("Allocation", "a3", 4)
	c.FilterKeys = []string{"web"}
	srv.Publish(c)
	out.wait(t, 3)
	r.stop(t)
	got, _ := out.snapshot()
	diffLines(t, got, append(expect(1, a, b), expect(3, c)...))
	if n := r.st.Stats().Snapshot().Duplicates; n != 1 {
		t.Errorf("got %d duplicates dropped, want 1", n)
	}
}

func TestStartPositions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		pos   Position
		first uint64 // first index written; then 6
	}{
		{"newest", Position{Index: Newest}, 5},
		{"replay", Position{Index: 0}, 1},
		{"inclusive index", Position{Index: 3}, 3},
		{"resume", Position{Index: 3, Written: true}, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, nomadtest.Options{})
			var events []nomadtest.Event
			for i := range 5 {
				events = append(events, smallEvent("Job", fmt.Sprint("j", i), i))
				srv.Publish(events[i])
			}
			out := newLineSink()
			r := startStreamer(t, srv.URL, nil, Config{}, out, tt.pos)
			r.logs.wait(t, "INFO event stream subscribed")
			e := smallEvent("Job", "new", 6)
			events = append(events, e)
			srv.Publish(e)
			var want []string
			for i := tt.first; i <= 6; i++ {
				want = append(want, expect(i, events[i-1])...)
			}
			got := out.wait(t, len(want))
			r.stop(t)
			diffLines(t, got, want)
			if n := r.st.Stats().Snapshot().Gaps; n != 0 {
				t.Errorf("got %d gaps, want 0", n)
			}
		})
	}
}

func TestRequestParameters(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "nomad.sock")
	if len(sock) > 100 {
		sock = filepath.Join("/tmp", fmt.Sprintf("el-%d.sock", rand.Int()))
		t.Cleanup(func() { _ = os.Remove(sock) })
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := nomadtest.NewWithListener(ln, nomadtest.Options{})
	srv.Start()
	t.Cleanup(srv.Close)
	e := smallEvent("Job", "web", 1)
	srv.Publish(e)
	client, err := NewClient(&api.Config{Address: "unix://" + sock, Region: "eu", SecretID: "s3cret",
		HttpAuth: &api.HttpBasicAuth{Username: "u", Password: "p"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := newLogSink()
	out := newLineSink()
	st := NewStreamer(client, testConfig(Config{Subscription: Subscription{Topics: []string{"Job:web", "Node"}, Namespace: "prod"}}, logs))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx, NewLines(out, LinesOptions{}), Position{Index: 0}) }()
	logs.wait(t, "INFO event stream subscribed")
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil", err)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	q := reqs[0].Query
	for k, want := range map[string]string{"index": "0", "namespace": "prod", "region": "eu", "topic": "Job:web,Node"} {
		if got := strings.Join(q[k], ","); got != want {
			t.Errorf("query %s: got %q, want %q", k, got, want)
		}
	}
	if reqs[0].Token != "s3cret" {
		t.Errorf("got token %q, want s3cret", reqs[0].Token)
	}
	if reqs[0].BasicAuth != "u:p" {
		t.Errorf("got basic auth %q, want u:p", reqs[0].BasicAuth)
	}
}

// A server that indents its JSON (none does today) still gets compact lines.
func TestWhitespaceCompacted(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "{}\n{\"Index\": 4, \"Events\": [ {\"Topic\": \"Job\", \"Payload\": {\"N\": 9007199254740993} } ]}\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	out := newLineSink()
	r := startStreamer(t, ts.URL, nil, Config{}, out, Position{Index: 0})
	got := out.wait(t, 1)
	r.stop(t)
	diffLines(t, got, []string{`{"Topic":"Job","Payload":{"N":9007199254740993}}`})
}

// Nomad sends one index's events in several frames when they come from
// different sources (a registration's Job and Evaluation events at one
// index, recorded on Nomad 2.0.5: internal/nomadtest's split-index.ndjson),
// and a subscription at that index starts with the first of them. Both
// frames are written, and a resume between or after them repeats and loses
// nothing; resumed from a Position, whose count of frames is not known,
// every frame at its index is taken as written.
func TestSplitIndexFrames(t *testing.T) {
	t.Parallel()
	a, b, c := smallEvent("Job", "a", 1), smallEvent("Allocation", "b", 2), smallEvent("Job", "c", 3)
	all := append(append(expect(5, a), expect(5, b)...), expect(6, c)...)
	tests := []struct {
		name  string
		cutAt int // cut the connection before this frame write (1-based); 0: none
		start Position
		want  []string
		conns int
	}{
		{"one subscription", 0, Position{}, all, 1},
		{"cut between the two frames of an index", 2, Position{}, all, 2},
		{"cut after both", 3, Position{}, all, 2},
		{"resumed from a position at that index", 0, Position{Index: 5, Written: true}, expect(6, c), 1},
		{"resumed from a position after the first frame of it", 0, Position{Index: 5, Written: true, Frames: 1}, append(expect(5, b), expect(6, c)...), 1},
		{"resumed from a position after both", 0, Position{Index: 5, Written: true, Frames: 2}, expect(6, c), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, nomadtest.Options{Cut: cutAt(tt.cutAt, nomadtest.Cut{Where: nomadtest.CutBeforeFrame})})
			srv.PublishAt(5, a)
			srv.PublishAt(5, b)
			srv.PublishAt(6, c)
			out := newLineSink()
			r := startStreamer(t, srv.URL, nil, Config{}, out, tt.start)
			out.wait(t, len(tt.want))
			if tt.conns > 1 {
				r.logs.wait(t, "resumed without a gap")
			}
			r.stop(t)
			got, _ := out.snapshot()
			diffLines(t, got, tt.want)
			if n := len(srv.Requests()); n != tt.conns {
				t.Errorf("got %d subscriptions, want %d", n, tt.conns)
			}
			if n := r.logs.count("out of order"); n != 0 {
				t.Errorf("%d frames dropped as out of order", n)
			}
			if got := r.st.Stats().Flushed(); got != (Position{Index: 6, Written: true, Frames: 1}) {
				t.Errorf("flushed position %+v, want index 6, one frame", got)
			}
		})
	}
}
