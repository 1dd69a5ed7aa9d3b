package nomad

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// bigEvent is an event whose frame, at index, is size bytes long.
func bigEvent(index uint64, size int) nomadtest.Event {
	e := nomadtest.Event{Topic: "Job", Type: "JobRegistered", Key: "big", Namespace: "default", Index: index}
	e.Payload = json.RawMessage(`{"Blob":""}`)
	pad := size - len(frameOf(index, e))
	e.Payload = json.RawMessage(`{"Blob":"` + strings.Repeat("x", pad) + `"}`)
	return e
}

// frameOf is the frame line the test server writes for one event.
func frameOf(index uint64, e nomadtest.Event) string {
	e.Index = index
	return fmt.Sprintf(`{"Events":[%s],"Index":%d}`, nomadtest.Encode(e), index)
}

// A frame over MaxFrameBytes is skipped: reported once, counted, and the
// stream goes on after it on the same connection, with no reconnect.
func TestOversizeFrameSkipped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		max      int
		size     int  // of the big frame
		cut      bool // cut the connection while the big frame is being read
		wantSize string
	}{
		// The stream's read buffer is 64 KiB: a frame above it is read in pieces.
		{"larger than the read buffer", 100 << 10, 300 << 10, false, "bytes=307200"},
		{"within the read buffer", 2 << 10, 10 << 10, false, "bytes=10240"},
		// Nomad writes the index last: the cut frame's index is unknown, so
		// it is read again on the resume, whole, and skipped then.
		{"connection cut while it is read", 100 << 10, 300 << 10, true, "bytes=307200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cut := cutAt(0, nomadtest.Cut{})
			if tt.cut {
				cut = cutAt(2, nomadtest.Cut{Where: nomadtest.CutMidFrame, Frac: 0.9}) // the big frame, the first time
			}
			srv := startServer(t, nomadtest.Options{Cut: cut})
			before := smallEvent("Job", "before", 1)
			after := smallEvent("Job", "after", 3)
			srv.Publish(before)
			big := bigEvent(2, tt.size)
			if n := len(frameOf(2, big)); n != tt.size {
				t.Fatalf("big frame: got %d bytes, want %d", n, tt.size)
			}
			srv.Publish(big)
			srv.Publish(after)
			out := newLineSink()
			r := startStreamer(t, srv.URL, nil, Config{MaxFrameBytes: tt.max}, out, Position{Index: 0})
			want := append(expect(1, before), expect(3, after)...)
			out.wait(t, len(want))
			rec := r.logs.wait(t, "ERROR frame skipped", "last_written=1", "skipped_index=2", tt.wantSize, fmt.Sprintf("max_frame_bytes=%d", tt.max))
			r.stop(t)
			got, _ := out.snapshot()
			diffLines(t, got, want)
			if n := r.logs.count("frame skipped"); n != 1 {
				t.Errorf("got %d skip records, want 1: %s", n, rec)
			}
			snap := r.st.Stats().Snapshot()
			if snap.Skipped != 1 {
				t.Errorf("got %d frames skipped, want 1", snap.Skipped)
			}
			wantConns := 1
			if tt.cut {
				wantConns = 2 // one resume, at the skipped index, which Nomad sends again first
			}
			if n := len(srv.Requests()); n != wantConns || snap.Reconnects != uint64(wantConns-1) {
				t.Errorf("got %d subscriptions and %d reconnects, want %d and %d", n, snap.Reconnects, wantConns, wantConns-1)
			}
			if snap.FlushedIndex != 3 {
				t.Errorf("got flushed index %d, want 3", snap.FlushedIndex)
			}
		})
	}
}

// The index of a dropped frame is read from its end, where Nomad writes it,
// and never from a payload's own "Index".
func TestTrailingIndex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		tail string
		want uint64
		ok   bool
	}{
		{`"Type":"JobRegistered"}],"Index":110}` + "\n", 110, true},
		{`}] , "Index" : 7 }`, 7, true},
		{`],"Index":18446744073709551615}`, 18446744073709551615, true},
		{`],"Index":18446744073709551616}`, 0, false},
		{`{"Job":{"Index":5}}}]}`, 0, false}, // Events last: the index was first
		{`"Payload":{"Index":5}}`, 0, false}, // cut inside an event
		{`],"Index":07}`, 0, false},          // not JSON
		{`],"Index":}`, 0, false},
		{`x"Index":9}`, 0, false},
	}
	for _, tt := range tests {
		n, ok := trailingIndex([]byte(tt.tail))
		if n != tt.want || ok != tt.ok {
			t.Errorf("trailingIndex(%q) = %d, %v; want %d, %v", tt.tail, n, ok, tt.want, tt.ok)
		}
	}
	// appendTail keeps the last tailBytes bytes across reads of any size.
	var arr [tailBytes]byte
	tl := arr[:0]
	var all []byte
	for _, piece := range []string{"abc", strings.Repeat("y", 30), strings.Repeat("z", 60), "],\"Index\":42}\n"} {
		tl = appendTail(tl, []byte(piece))
		all = append(all, piece...)
		want := all[max(0, len(all)-tailBytes):]
		if string(tl) != string(want) {
			t.Fatalf("tail %q, want %q", tl, want)
		}
	}
	if n, ok := trailingIndex(tl); !ok || n != 42 {
		t.Errorf("index from the kept tail: %d, %v", n, ok)
	}
}
