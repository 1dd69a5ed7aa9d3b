package nomad

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// gateWriter blocks every write until released, like a stalled log shipper.
type gateWriter struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
	sink    *lineSink
}

func newGateWriter() *gateWriter {
	return &gateWriter{entered: make(chan struct{}), release: make(chan struct{}), sink: newLineSink()}
}

func (g *gateWriter) Write(p []byte) (int, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.release
	return g.sink.Write(p)
}

func (g *gateWriter) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(hang):
		t.Fatal("the first write never came")
	}
}

func lineIndex(t *testing.T, line string) uint64 {
	t.Helper()
	var e struct{ Index uint64 }
	if err := json.Unmarshal([]byte(line), &e); err != nil {
		t.Fatalf("line %.100q: %v", line, err)
	}
	return e.Index
}

func TestBlockedStdoutWithinBuffer(t *testing.T) {
	t.Parallel()
	srv := startServer(t, nomadtest.Options{})
	out := newGateWriter()
	r := startStreamer(t, srv.URL, nil, Config{}, out, Position{Index: 0})
	var want []string
	e := smallEvent("Job", "first", 0)
	want = append(want, expect(srv.Publish(e), e)...)
	out.waitEntered(t)
	for i := range 50 {
		e := smallEvent("Job", fmt.Sprint("j", i), i)
		want = append(want, expect(srv.Publish(e), e)...)
	}
	close(out.release)
	got := out.sink.wait(t, len(want))
	r.stop(t)
	diffLines(t, got, want)
}

// Blocked past Nomad's patience: Nomad drops the subscription, the reader
// resumes once stdout drains and reports the gap. Memory stays bounded
// meanwhile: the server can only give up on a reader that stopped reading.
func TestBlockedStdoutPastBuffer(t *testing.T) {
	t.Parallel()
	const bufSize, frames = 10, 300
	srv := startServer(t, nomadtest.Options{BufferSize: bufSize, SendBuffer: 4096, WriteTimeout: 50 * time.Millisecond})
	out := newGateWriter()
	r := startStreamer(t, srv.URL, nil, Config{}, out, Position{Index: 0})
	srv.Publish(smallEvent("Job", "first", 0))
	out.waitEntered(t)
	pad := strings.Repeat("x", 16<<10)
	for i := range frames {
		e := smallEvent("Job", fmt.Sprint("j", i), i)
		e.Payload = json.RawMessage(fmt.Sprintf(`{"Job":{"N":%d,"Pad":%q}}`, i, pad))
		srv.Publish(e)
	}
	published := int64(frames) * int64(len(pad))
	deadline := time.Now().Add(hang)
	for srv.Conns() > 0 { // until the server gives up on the blocked reader
		if time.Now().After(deadline) {
			t.Fatal("the server never dropped the blocked subscription")
		}
		time.Sleep(time.Millisecond)
	}
	read := r.st.Stats().Snapshot().BytesRead
	if read > 1<<20 {
		t.Errorf("while stdout was blocked: got %d bytes read from Nomad, want at most 1 MiB of %d published", read, published)
	}
	close(out.release)

	last := uint64(frames + 1)
	rec := r.logs.wait(t, "WARN gap in the event stream")
	var got []string
	for {
		got = out.sink.wait(t, len(got)+1)
		if lineIndex(t, got[len(got)-1]) == last {
			break
		}
	}
	r.stop(t)
	var lastWritten, firstReceived uint64
	if _, err := fmt.Sscanf(rec[strings.Index(rec, "last_written="):], "last_written=%d first_received=%d", &lastWritten, &firstReceived); err != nil {
		t.Fatalf("gap record %q: %v", rec, err)
	}
	seen := map[uint64]bool{}
	prev := uint64(0)
	for _, l := range got {
		idx := lineIndex(t, l)
		if idx <= prev {
			t.Fatalf("index %d after %d: want strictly increasing, no duplicate", idx, prev)
		}
		prev = idx
		seen[idx] = true
	}
	for i := uint64(1); i <= last; i++ {
		if !seen[i] && (i <= lastWritten || i >= firstReceived) {
			t.Errorf("index %d missing outside the reported gap (%d, %d)", i, lastWritten, firstReceived)
		}
	}
	// Nomad keeps event_buffer_size+1 indexes (transcript B3).
	if firstReceived != last-bufSize {
		t.Errorf("got first received %d, want %d (the oldest still buffered)", firstReceived, last-bufSize)
	}
	if n := r.st.Stats().Snapshot().Gaps; n != 1 {
		t.Errorf("got %d gaps, want 1", n)
	}
}
