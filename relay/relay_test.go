package relay

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// collector records what a Streamer hands over: frames and discontinuities.
type collector struct {
	mu     sync.Mutex
	frames []string
	discs  []nomad.Discontinuity
	ch     chan struct{}
}

func newCollector() *collector { return &collector{ch: make(chan struct{}, 1)} }

func (c *collector) poke() {
	select {
	case c.ch <- struct{}{}:
	default:
	}
}
func (c *collector) Frame(f nomad.Frame) error {
	c.mu.Lock()
	c.frames = append(c.frames, string(f.Raw))
	c.mu.Unlock()
	c.poke()
	return nil
}
func (c *collector) Discontinuity(d nomad.Discontinuity) error {
	c.mu.Lock()
	c.discs = append(c.discs, d)
	c.mu.Unlock()
	c.poke()
	return nil
}
func (*collector) Event(nomad.Event) error   { return nil }
func (*collector) Idle(nomad.Position) error { return nil }
func (*collector) Up()                       {}
func (*collector) Down(error)                {}

// wait blocks until cond holds on the collector (bounded by the test's
// deadline, not by a timed assertion).
func (c *collector) wait(t *testing.T, what string, cond func(frames []string, discs []nomad.Discontinuity) bool) []string {
	t.Helper()
	for {
		c.mu.Lock()
		ok := cond(c.frames, c.discs)
		fr := append([]string(nil), c.frames...)
		c.mu.Unlock()
		if ok {
			return fr
		}
		select {
		case <-c.ch:
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: test ended", what)
		}
	}
}

func follow(t *testing.T, url string, h nomad.Handler, pos nomad.Position) {
	t.Helper()
	client, err := nomad.NewClient(&api.Config{Address: url}, func() (string, error) { return "", nil })
	if err != nil {
		t.Fatal(err)
	}
	st := nomad.NewStreamer(client, nomad.Config{Subscription: nomad.Subscription{Topics: []string{"Job"}},
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }, HeartbeatTimeout: 0})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = st.Run(ctx, h, pos) }()
	t.Cleanup(func() { cancel(); <-done })
}

func serve(t *testing.T, s *Server) string {
	t.Helper()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestRelayByteIdentical: fake Nomad → Streamer → relay → three Streamer
// clients, split-index frames included, every client gets Nomad's frames
// byte for byte; one resuming within the history gets the rest exactly.
func TestRelayByteIdentical(t *testing.T) {
	fake := nomadtest.StartT(t, nomadtest.Options{})
	up := newCollector()
	h := NewHistory(HistoryOptions{})
	follow(t, fake.URL, multi{Feed{h}, up}, nomad.Position{})
	url := serve(t, &Server{History: h})

	fake.PublishAt(5, nomadtest.JobEvent(1, "web", "default"))
	fake.PublishAt(7, nomadtest.JobEvent(2, "web", "default"))
	fake.PublishAt(7, nomadtest.JobEvent(3, "api", "default")) // a split index
	up.wait(t, "upstream frames", func(f []string, _ []nomad.Discontinuity) bool { return len(f) == 3 })
	var cs []*collector
	for range 3 {
		c := newCollector()
		cs = append(cs, c)
		follow(t, url, c, nomad.Position{})
	}
	fake.PublishAt(9, nomadtest.JobEvent(4, "web", "default"))
	want := up.wait(t, "upstream frames", func(f []string, _ []nomad.Discontinuity) bool { return len(f) == 4 })
	for i, c := range cs {
		got := c.wait(t, "relayed frames", func(f []string, _ []nomad.Discontinuity) bool { return len(f) >= 4 })
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("client %d: frames differ from Nomad's:\n got %q\nwant %q", i, got, want)
		}
	}
	// A resume from the first frame of index 7 (written): the second frame
	// of 7 and 9 come, nothing repeated, no discontinuity.
	r := newCollector()
	follow(t, url, r, nomad.Position{Index: 7, Written: true, Frames: 1})
	got := r.wait(t, "resumed frames", func(f []string, _ []nomad.Discontinuity) bool { return len(f) >= 2 })
	if strings.Join(got, "\n") != strings.Join(want[2:], "\n") || len(r.discs) != 0 {
		t.Errorf("resume: got %q, discontinuities %v; want %q", got, r.discs, want[2:])
	}
}

// TestRelayResumeBelowHistory: a client resuming from an index the history
// no longer holds exactly sees a Gap.
func TestRelayResumeBelowHistory(t *testing.T) {
	h := NewHistory(HistoryOptions{MaxBytes: 100, MaxFrameBytes: 100})
	line := func(i int) string {
		return `{"Events":[{"Topic":"Job","Index":` + strconv.Itoa(i) + `}],"Index":` + strconv.Itoa(i) + `}`
	}
	for i := 1; i <= 6; i++ {
		h.Add(uint64(i), []byte(line(i)))
	}
	if h.Floor() <= 2 {
		t.Fatalf("floor %d: the ring should have dropped the first frames", h.Floor())
	}
	url := serve(t, &Server{History: h})
	c := newCollector()
	follow(t, url, c, nomad.Position{Index: 2, Written: true})
	c.wait(t, "a gap", func(_ []string, d []nomad.Discontinuity) bool { return len(d) > 0 })
	if d := c.discs[0]; d.Kind != nomad.Gap || d.Last != 2 {
		t.Errorf("discontinuity %+v, want a gap from 2", d)
	}
}

// multi hands everything to several handlers.
type multi []nomad.FrameHandler

func (m multi) Frame(f nomad.Frame) error {
	for _, h := range m {
		if err := h.Frame(f); err != nil {
			return err
		}
	}
	return nil
}
func (m multi) Discontinuity(d nomad.Discontinuity) error {
	for _, h := range m {
		if err := h.Discontinuity(d); err != nil {
			return err
		}
	}
	return nil
}
func (multi) Event(nomad.Event) error   { return nil }
func (multi) Idle(nomad.Position) error { return nil }
func (multi) Up()                       {}
func (multi) Down(error)                {}

func TestServerRefusals(t *testing.T) {
	s := &Server{History: NewHistory(HistoryOptions{}), MaxSubscribers: 1}
	url := serve(t, s)
	for _, tc := range []struct {
		method, query string
		status        int
	}{
		{"POST", "?topic=Job", http.StatusMethodNotAllowed},
		{"GET", "?topic=Allocation", http.StatusBadRequest},
		{"GET", "", http.StatusBadRequest},
		{"GET", "?topic=Job&index=x", http.StatusBadRequest},
		{"GET", "?topic=Job&namespace=other", http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, url+"/v1/event/stream"+tc.query, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.query, resp.StatusCode, tc.status)
		}
	}
	// The limit: one subscriber open (its first `{}` read), the next 503.
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /v1/event/stream?topic=Job HTTP/1.1\r\nHost: x\r\n\r\n"))
	buf := make([]byte, 4096)
	n := 0
	for !strings.Contains(string(buf[:n]), "\r\n\r\n{}\n") && n < len(buf) {
		k, err := c.Read(buf[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	resp, err := http.Get(url + "/v1/event/stream?topic=Job")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("over the limit: %d, want 503", resp.StatusCode)
	}
}

// TestRelayBreakReachesLiveSubscriber: a break in Nomad's stream cuts off
// a live subscriber; its resume starts above its last index, which its
// Streamer reports as a gap rather than carrying on as if continuous.
func TestRelayBreakReachesLiveSubscriber(t *testing.T) {
	h := NewHistory(HistoryOptions{})
	h.Add(1, []byte(`{"Events":[{"Topic":"Job","Index":1}],"Index":1}`))
	h.Add(2, []byte(`{"Events":[{"Topic":"Job","Index":2}],"Index":2}`))
	url := serve(t, &Server{History: h})
	c := newCollector()
	follow(t, url, c, nomad.Position{})
	c.wait(t, "two frames", func(f []string, _ []nomad.Discontinuity) bool { return len(f) == 2 })
	if err := (Feed{h}).Discontinuity(nomad.Discontinuity{Kind: nomad.Gap, Last: 2, Next: 10}); err != nil {
		t.Fatal(err)
	}
	h.Add(10, []byte(`{"Events":[{"Topic":"Job","Index":10}],"Index":10}`))
	c.wait(t, "the gap and frame 10", func(f []string, d []nomad.Discontinuity) bool { return len(f) == 3 && len(d) == 1 })
	if d := c.discs[0]; d.Kind != nomad.Gap || d.Last != 2 || d.Next != 10 {
		t.Errorf("discontinuity %+v, want a gap from 2 to 10", d)
	}
}

// TestRelaySlowSubscriberCut: a subscriber that stops reading is cut off
// once its backlog passes the bound, while another gets every frame.
func TestRelaySlowSubscriberCut(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 48 MB over loopback")
	}
	h := NewHistory(HistoryOptions{MaxBytes: 64 << 20, MaxBacklog: 16 << 20})
	url := serve(t, &Server{History: h})
	slow, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.Write([]byte("GET /v1/event/stream?topic=Job HTTP/1.1\r\nHost: x\r\n\r\n"))
	fast := newCollector()
	follow(t, url, fast, nomad.Position{})
	pad := strings.Repeat("a", 1<<20)
	const n = 48
	for i := 1; i <= n; i++ {
		h.Add(uint64(i), []byte(`{"Events":[{"Topic":"Job","Index":`+strconv.Itoa(i)+`,"Payload":{"x":"`+pad+`"}}],"Index":`+strconv.Itoa(i)+`}`))
		fast.wait(t, "frame "+strconv.Itoa(i), func(f []string, _ []nomad.Discontinuity) bool { return len(f) == i })
	}
	// The slow one's connection was closed: reading it drains to EOF.
	buf := make([]byte, 1<<20)
	read := 0
	for read <= n<<20+1<<20 {
		k, err := slow.Read(buf)
		read += k
		if err != nil {
			break
		}
	}
	if read >= n<<20 {
		t.Errorf("slow subscriber read %d bytes: it was not cut off", read)
	}
}
