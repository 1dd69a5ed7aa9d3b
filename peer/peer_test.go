package peer

// Transfers between agents on the real dockerd (the test bed's private
// daemon): a real Server's image is copied and verified; a peer that
// announces one ID and sends another image, one that sends a cut archive,
// one that stalls and one that sends too much are each refused, and
// nothing they sent is reported as copied.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/internal/tartest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

var bed *testbed.Bed

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, &bed)) }

type staticPeers []Peer

func (s staticPeers) Peers(context.Context) ([]Peer, error) { return s, nil }

func engine(t *testing.T) *registry.Engine {
	t.Helper()
	e, err := registry.NewEngine(registry.Options{Host: bed.Host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// image imports an image as ref on the bed and returns its ID.
func image(t *testing.T, ref, seed string) string {
	t.Helper()
	if _, err := bed.Import(context.Background(), ref, seed, 64<<10); err != nil {
		t.Fatal(err)
	}
	imgs, err := bed.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return imgs[ref]
}

// bundleOf is the one-image bundle a Server would send for ref.
func bundleOf(t *testing.T, e *registry.Engine, ref string) []byte {
	t.Helper()
	im, err := e.Inspect(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := bundle.Stream(context.Background(), e, &b, []bundle.Entry{bundle.EntryFor(ref, ref, "", "", im)}, bundle.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func source(t *testing.T, e *registry.Engine, addr string) *Source {
	return &Source{
		Self: func() string { return "self-node" }, Lister: staticPeers{{Node: "peer-node-1", Address: addr}},
		Engine: e, MaxSize: 64 << 20, Wait: time.Second, StallTimeout: time.Second,
	}
}

func TestCopyFromServer(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:good"
	id := image(t, ref, "good")
	var served int64
	srv := &Server{
		Held:   func(r string) Held { return Held{Expected: r == ref, State: "present", ImageID: id} },
		Engine: e, MaxServing: 1, Authorize: func(*http.Request) error { return nil },
		Served: func(n int64) { served += n },
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	src := source(t, e, strings.TrimPrefix(ts.URL, "http://"))
	c, err := src.Image(context.Background(), ref, "", false, registry.ArchiveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c.ID != id || c.Peer.Node != "peer-node-1" || c.Bytes == 0 || served != c.Bytes {
		t.Fatalf("copied %+v (served %d bytes), want %s from peer-node-1", c, served, id)
	}
	// An image the server does not expect is never served.
	_, err = src.Image(context.Background(), "peer.test/app:other", "", false, registry.ArchiveOptions{})
	var nc *NoCopyError
	if !errors.As(err, &nc) || !strings.Contains(err.Error(), "does not expect it") {
		t.Fatalf("an image the peer does not expect: %v", err)
	}
	// Asked first with the only peer not expecting it: fetch it yourself.
	if _, err := src.Image(context.Background(), "peer.test/app:other", "", true, registry.ArchiveOptions{}); !errors.Is(err, ErrFetchYourself) {
		t.Fatalf("asked first, no peer expecting it: %v, want ErrFetchYourself", err)
	}
}

func TestServerRefuses(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:refuse"
	id := image(t, ref, "refuse")
	for _, c := range []struct {
		name      string
		authorize func(*http.Request) error
		held      Held
		want      int
	}{
		{"unauthorized", func(*http.Request) error { return errors.New("peer: workload identity refused: signature") }, Held{Expected: true, ImageID: id}, http.StatusForbidden},
		{"unavailable", func(*http.Request) error { return ErrUnavailable }, Held{Expected: true, ImageID: id}, http.StatusServiceUnavailable},
		{"not expected", func(*http.Request) error { return nil }, Held{}, http.StatusNotFound},
		{"not present", func(*http.Request) error { return nil }, Held{Expected: true, State: "pulling"}, http.StatusNotFound},
		{"another ID than held", func(*http.Request) error { return nil }, Held{Expected: true, ImageID: "sha256:" + strings.Repeat("0", 64)}, http.StatusNotFound},
	} {
		srv := &Server{Held: func(string) Held { return c.held }, Engine: e, MaxServing: 1, Authorize: c.authorize}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path+"?ref="+ref, nil))
		if rec.Code != c.want || rec.Header().Get(IDHeader) != "" {
			t.Errorf("%s: %d %q, want %d and no transfer", c.name, rec.Code, rec.Body.String(), c.want)
		}
	}
}

func TestHostilePeers(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:wanted"
	wantID := image(t, ref, "wanted")
	otherRef := "peer.test/app:w4nted" // as long as ref: a name swapped in place keeps the archive whole
	otherID := image(t, otherRef, "evil")
	good := bundleOf(t, e, ref)
	evil := bundleOf(t, e, otherRef)
	victim := "peer.test/app:victim" // what a tag sent would make of a name this node does not have
	tagged := forge(t, good, `"RepoTags":null`, `"RepoTags":["`+victim+`"]`)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	for _, c := range []struct {
		name  string
		serve func(w http.ResponseWriter, r *http.Request)
		want  string
		max   int64
		dgst  string
	}{
		{"another image under the ID", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(IDHeader, wantID)
			w.Write(evil)
		}, "the bundle holds no image for it", 0, ""},
		{"announced as another ID than its manifest names", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(IDHeader, otherID)
			w.Write(good)
		}, "its manifest names " + wantID, 0, ""},
		{"a tag held back until vetted", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(IDHeader, wantID)
			w.Write(tagged)
		}, "would tag", 0, ""},
		{"a cut archive", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(IDHeader, wantID)
			w.Write(good[:len(good)/2])
		}, "refused", 0, ""},
		{"a stall", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(IDHeader, wantID)
			w.Write(good[:len(good)/2])
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}, "made no progress for 1s", 0, ""}, // the options' stall_timeout, not the Source's minute
		{"too much", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(IDHeader, wantID)
			w.Write(good)
		}, "max_size", 4 << 10, ""},
		{"a digest pin its archive does not prove", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(IDHeader, wantID)
			w.Write(good)
		}, "pins digest", 0, "sha256:" + strings.Repeat("a", 64)},
		{"no ID", func(w http.ResponseWriter, r *http.Request) {
			w.Write(good)
		}, "announced no image ID", 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			ts := httptest.NewServer(http.HandlerFunc(c.serve))
			defer ts.Close()
			src := source(t, e, strings.TrimPrefix(ts.URL, "http://"))
			src.StallTimeout = time.Minute
			if c.max > 0 {
				src.MaxSize = c.max
			}
			got, err := src.Image(context.Background(), ref, c.dgst, false, registry.ArchiveOptions{StallTimeout: time.Second})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("copied %+v, err %v; want a refusal saying %q", got, err, c.want)
			}
			t.Logf("refused: %v", err)
		})
	}
	absent(t, e, "after the refused transfers", victim)
}

// absent fails t for each of refs (names or IDs) that Docker has.
func absent(t *testing.T, e *registry.Engine, when string, refs ...string) {
	t.Helper()
	for _, ref := range refs {
		if _, err := e.Inspect(context.Background(), ref); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s is in Docker %s (inspect: %v)", ref, when, err)
		}
	}
}

// A peer asked first waits at the agent getting the image: the question is
// held until the image is present there, then served.
func TestHeldUntilPresent(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:held"
	id := image(t, ref, "held")
	asked, present := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := &Server{
		Held: func(string) Held {
			select {
			case <-present:
				return Held{Expected: true, State: "present", ImageID: id}
			default:
				once.Do(func() { close(asked) })
				return Held{Expected: true, State: "pulling"}
			}
		},
		Engine: e, MaxServing: 1, Authorize: func(*http.Request) error { return nil },
	}
	go func() {
		<-asked
		close(present) // the agent got it while the question was held
	}()
	c, err := askFirstBehind(t, e, srv, ref)
	if err != nil || c.ID != id {
		t.Fatalf("asked first while the peer was getting it: %+v, %v; want %s", c, err, id)
	}
}

// askFirstBehind asks srv first for ref, as an agent ranked behind it (its
// own node not known yet, so ranked last) that waits up to a minute.
func askFirstBehind(t *testing.T, e *registry.Engine, srv *Server, ref string) (Copy, error) {
	t.Helper()
	ts := httptest.NewServer(srv)
	defer ts.Close()
	src := source(t, e, strings.TrimPrefix(ts.URL, "http://"))
	src.Wait = time.Minute
	src.Self = func() string { return "" }
	return src.Image(context.Background(), ref, "", true, registry.ArchiveOptions{})
}

// forge rewrites a transfer's archive as a hostile peer would, keeping it
// well formed: from becomes to in every member's name and in the content
// of the members that are not layers.
func forge(t *testing.T, archive []byte, from, to string) []byte {
	t.Helper()
	return tartest.Rewrite(t, archive, func(name string, data []byte) (string, []byte) {
		if !strings.HasSuffix(name, "layer.tar") {
			data = bytes.ReplaceAll(data, []byte(from), []byte(to))
		}
		return strings.ReplaceAll(name, from, to), data
	})
}

// A peer that announces one ID and sends, well formed, another image whose
// archive and manifest claim that ID (its members renamed, its metadata
// rewritten), to a node that has neither: every check of the archive
// passes, and what the Engine makes of it is refused. On the classic image
// store the Engine loads the other image, under its own ID, and the load's
// image is removed again; on the containerd store the content the index
// names is not there, and the load fails. Either way the node is left as it
// was: nothing tagged, neither image present.
func TestRefusedCopyLeavesNothing(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:announced"
	wantID := image(t, ref, "announced")
	otherRef := "peer.test/app:sent"
	otherID := image(t, otherRef, "sent instead")
	im, err := e.Inspect(context.Background(), otherRef)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := bundle.Stream(context.Background(), e, &b, []bundle.Entry{bundle.EntryFor(ref, ref, "", "", im)}, bundle.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{otherID, wantID} {
		if err := bed.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
	forged := forge(t, b.Bytes(), strings.TrimPrefix(otherID, "sha256:"), strings.TrimPrefix(wantID, "sha256:"))
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(IDHeader, wantID)
		w.Write(forged)
	}))
	defer ts.Close()
	got, err := source(t, e, strings.TrimPrefix(ts.URL, "http://")).Image(context.Background(), ref, "", false, registry.ArchiveOptions{})
	if err == nil || !strings.Contains(err.Error(), "what it sent was refused") {
		t.Fatalf("copied %+v, err %v; want what it sent refused", got, err)
	}
	t.Logf("refused: %v", err)
	absent(t, e, "after the refused copy", otherID, wantID, ref)
}

// Asked first, an agent ranked behind a peer that does not expect the
// image yet asks it once more a moment later (the agents learn of a new
// image each on its own): it copies the image rather than pulling it too.
func TestAskedAgainBeforeFetching(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:later"
	id := image(t, ref, "later")
	var mu sync.Mutex
	asks := 0
	srv := &Server{
		Held: func(string) Held {
			mu.Lock()
			defer mu.Unlock()
			asks++
			if asks == 1 {
				return Held{} // its config does not have the image yet
			}
			return Held{Expected: true, State: "present", ImageID: id}
		},
		Engine: e, MaxServing: 1, Authorize: func(*http.Request) error { return nil },
	}
	c, err := askFirstBehind(t, e, srv, ref)
	if err != nil || c.ID != id {
		t.Fatalf("asked first, the peer ahead learning of the image a moment later: %+v, %v; want a copy of %s", c, err, id)
	}
}

// slowLoad is an Engine that takes hold longer after each load, as an
// Engine applying the layers of a large image does after the archive's
// end.
type slowLoad struct {
	bundle.Engine
	hold time.Duration
}

func (e slowLoad) Load(ctx context.Context, archive io.Reader, opts registry.ArchiveOptions, progress func(int64)) (registry.LoadResult, error) {
	res, err := e.Engine.Load(ctx, archive, opts, progress)
	select {
	case <-time.After(e.hold):
	case <-ctx.Done():
		return res, context.Cause(ctx)
	}
	return res, err
}

// The stall watchdog bounds the transfer, not the load after it: an Engine
// that takes longer than stall_timeout to apply what came whole is waited
// for (its own timeouts bound it).
func TestSlowLoadAfterTransfer(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:slow"
	id := image(t, ref, "slow")
	transfer := bundleOf(t, e, ref)
	if err := bed.Remove(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(IDHeader, id)
		w.Write(transfer)
	}))
	defer ts.Close()
	src := source(t, e, strings.TrimPrefix(ts.URL, "http://"))
	src.Engine = slowLoad{Engine: e, hold: 600 * time.Millisecond}
	c, err := src.Image(context.Background(), ref, "", false, registry.ArchiveOptions{StallTimeout: 200 * time.Millisecond})
	if err != nil || c.ID != id {
		t.Fatalf("a load slower than stall_timeout after a whole transfer: %+v, %v; want %s", c, err, id)
	}
}

// gatedSaver counts the Engine's saves and holds each after its first
// bytes until gate is closed: the peers asking meanwhile join it.
type gatedSaver struct {
	*registry.Engine
	saves atomic.Int32
	after int64
	gate  chan struct{}
}

func (g *gatedSaver) Save(ctx context.Context, ids []string, opts registry.ArchiveOptions) (io.ReadCloser, error) {
	g.saves.Add(1)
	rc, err := g.Engine.Save(ctx, ids, opts)
	if err != nil {
		return nil, err
	}
	held := readerFunc(func(p []byte) (int, error) {
		<-g.gate
		return rc.Read(p)
	})
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(io.LimitReader(rc, g.after), held), rc}, nil
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// Peers asking for an image while its save begins share that one save: a
// peer that joins after the first bytes went out is sent them first, and
// one that takes nothing is cut off without holding the others (for the
// minute a peer alone may take), its write in flight ended.
func TestAskersShareOneSave(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:shared"
	if _, err := bed.Import(context.Background(), ref, "shared", 16<<20); err != nil {
		t.Fatal(err)
	}
	im, err := e.Inspect(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedSaver{Engine: e, after: 512 << 10, gate: make(chan struct{})}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(g.gate) }) })
	joined := make(chan struct{}, 3)
	logged := make(lines, 8)
	counted := make(chan string, 8)
	srv := &Server{
		Held:   func(string) Held { return Held{Expected: true, State: "present", ImageID: im.ID} },
		Engine: g, MaxServing: 3, Authorize: func(*http.Request) error { return nil },
		StallTimeout: func() time.Duration { return time.Minute }, // what a peer alone may take
		behind:       200 * time.Millisecond,                      // a peer of several whose queue stays full that long is cut off
		joined:       func(bundle.Entry) { joined <- struct{}{} },
		Log:          slog.New(slog.NewTextHandler(logged, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Count:        func(e string) { counted <- e },
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	u := ts.URL + Path + "?ref=" + ref
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // far below the stall: the others were not held by the stalled peer
	defer cancel()
	get := func() *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", u, resp, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	first := get()
	<-joined
	head := make([]byte, 1) // the save's first bytes are out
	if _, err := io.ReadFull(first.Body, head); err != nil {
		t.Fatal(err)
	}
	second := get()
	<-joined
	// A peer that asks and takes nothing (a slow one: TestShareCutsOffASlowPeer).
	stalled, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	stalled.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := io.WriteString(stalled, "GET "+Path+"?ref="+ref+" HTTP/1.1\r\nHost: peer\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	<-joined
	once.Do(func() { close(g.gate) })
	var bodies [2][]byte
	var wg sync.WaitGroup
	for i, resp := range []*http.Response{first, second} {
		wg.Go(func() {
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Errorf("transfer %d: %v after %d bytes", i+1, err, len(b))
			}
			bodies[i] = b
		})
	}
	wg.Wait()
	bodies[0] = append(head, bodies[0]...)
	if !bytes.Equal(bodies[0], bodies[1]) || len(bodies[0]) < 16<<20 {
		t.Fatalf("the two transfers differ: %d and %d bytes", len(bodies[0]), len(bodies[1]))
	}
	if n := g.saves.Load(); n != 1 {
		t.Fatalf("%d saves for three peers asking at once, want 1", n)
	}
	// What the joiner got is the image, whole.
	got, err := bundle.NewLoader(e, slog.New(slog.DiscardHandler)).Stream(context.Background(), bytes.NewReader(bodies[1]), ref, "", im.ID, registry.ArchiveOptions{})
	if err != nil || got != im.ID {
		t.Fatalf("loading the joiner's transfer: %s, %v; want %s", got, err, im.ID)
	}
	// The stalled peer was cut off: its write in flight is ended, and its
	// transfer fails for falling behind, not served whole.
	select {
	case line := <-logged:
		if !strings.Contains(line, "a transfer failed") || !strings.Contains(line, "fell behind") {
			t.Fatalf("the server logged %q, want the stalled peer's transfer cut off for falling behind", line)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stalled peer's transfer did not end")
	}
	events := map[string]int{}
	for range 4 {
		select {
		case e := <-counted:
			events[e]++
		case <-time.After(10 * time.Second):
			t.Fatalf("counted %v, want 4 events", events)
		}
	}
	if want := map[string]int{EventSave: 1, EventWhole: 2, EventFailed: 1}; !maps.Equal(events, want) || len(counted) > 0 {
		t.Errorf("counted %v (and %d more), want %v", events, len(counted), want)
	}
}

// lines sends each line written to it (a slog.TextHandler writes a record
// a call) to a channel.
type lines chan string

func (l lines) Write(p []byte) (int, error) {
	l <- string(p)
	return len(p), nil
}

// A peer ranked ahead that can't answer at first (here: it can't check
// callers now, 503) is asked once more before this agent fetches the
// image itself.
func TestAskedAgainAfterRefusal(t *testing.T) {
	testbed.Need(t, bed)
	e := engine(t)
	ref := "peer.test/app:unsure"
	id := image(t, ref, "unsure")
	var asks atomic.Int32
	srv := &Server{
		Held:   func(string) Held { return Held{Expected: true, State: "present", ImageID: id} },
		Engine: e, MaxServing: 1,
		Authorize: func(*http.Request) error {
			if asks.Add(1) == 1 {
				return ErrUnavailable
			}
			return nil
		},
	}
	c, err := askFirstBehind(t, e, srv, ref)
	if err != nil || c.ID != id {
		t.Fatalf("asked first, the peer ahead unable to check callers at first: %+v, %v; want a copy of %s", c, err, id)
	}
}
