package nomad

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// LinesOptions.Flushed is called with the index of the last frame whose events
// have all reached the writer, when the writer holds exactly the frames up
// to it: never a frame cut in two, never an index ahead of what was written.
// eventlog's HA mode commits its checkpoint from these calls.
func TestFlushedMarksFrameBoundaries(t *testing.T) {
	t.Parallel()
	var cutMu sync.Mutex
	frames := 0
	cut := func() nomadtest.Cut { // now and then a connection cut inside a frame
		cutMu.Lock()
		defer cutMu.Unlock()
		if frames++; frames%17 == 0 {
			return nomadtest.Cut{Where: nomadtest.CutMidFrame, Frac: 0.5}
		}
		return nomadtest.Cut{}
	}
	srv := startServer(t, nomadtest.Options{BufferSize: 1000, Cut: cut})
	for i := range 300 {
		events := []nomadtest.Event{nomadtest.JobEvent(i, "web", "default")}
		if i%3 == 0 { // frames of several events, over the 64 KiB buffer now and then
			events = append(events, nomadtest.AllocationEvent(i, "web", "default"), nomadtest.AllocationEvent(i+1, "web", "default"))
		}
		srv.Publish(events...)
	}
	out := newLineSink()
	var mu sync.Mutex
	var bad []string
	calls := 0
	check := func(pos Position) {
		index := pos.Index
		out.mu.Lock()
		defer out.mu.Unlock()
		mu.Lock()
		defer mu.Unlock()
		calls++
		switch {
		case len(out.buf) > 0:
			bad = append(bad, "a flush ended inside a line")
		case len(out.lines) == 0:
			bad = append(bad, "a flush with nothing written named an index")
		default:
			var e struct{ Index uint64 }
			if err := json.Unmarshal([]byte(out.lines[len(out.lines)-1]), &e); err != nil || e.Index != index {
				bad = append(bad, "the last line written is not of the flushed index")
			}
			if !pos.Written || pos.Frames != 1 {
				bad = append(bad, "a flushed position without its one frame")
			}
		}
	}
	r := startStreamer(t, srv.URL, nil, Config{}, NewLines(out, LinesOptions{Flushed: check}), Position{Index: 0})
	out.wait(t, 500) // 100 frames of 3 events, 200 of 1
	r.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if calls == 0 || len(bad) > 0 {
		t.Errorf("%d calls; wrong: %s", calls, strings.Join(bad, "; "))
	}
}
