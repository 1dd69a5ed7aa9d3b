package nomad

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// benchStream is 200 frames of two realistic events each (Allocation and
// Job payloads of a few KB), with a heartbeat every 50 frames.
func benchStream(b *testing.B) []byte {
	b.Helper()
	var buf bytes.Buffer
	for i := range 200 {
		if i%50 == 0 {
			buf.WriteString("{}\n")
		}
		evs := [][]byte{}
		for k, e := range []nomadtest.Event{nomadtest.AllocationEvent(2*i, "web", "default"), nomadtest.JobEvent(i, "web", "default")} {
			if k == 1 && i%2 == 0 {
				e = nomadtest.AllocationEvent(2*i+1, "web", "default")
			}
			e.Index = uint64(i + 1)
			evs = append(evs, nomadtest.Encode(e))
		}
		fmt.Fprintf(&buf, `{"Events":[%s],"Index":%d}`+"\n", bytes.Join(evs, []byte(",")), i+1) // as Nomad writes it
	}
	return buf.Bytes()
}

// BenchmarkDecodeWrite is eventlog's path from stream bytes to stdout bytes.
func BenchmarkDecodeWrite(b *testing.B) { benchDecodeWrite(b, nil) }

// BenchmarkDecodeWriteLocate is the same path redacting as eventlog does by
// default: the fields of its env blocks and a dozen others located in the
// parse and replaced on write.
func BenchmarkDecodeWriteLocate(b *testing.B) {
	var paths []string
	for _, f := range []string{"Env", "Config.auth", "Templates.*.EmbeddedTmpl", "Artifacts.*.GetterSource",
		"Artifacts.*.GetterOptions", "Artifacts.*.GetterHeaders", "Services.*.Checks.*.Header", "Services.*.Checks.*.Body"} {
		paths = append(paths, "TaskGroups.*.Tasks.*."+f)
	}
	paths = append(paths, "TaskGroups.*.Services.*.Checks.*.Header", "TaskGroups.*.Services.*.Checks.*.Body", "Payload")
	f := Fields{}
	for topic, root := range map[string]string{"Job": "Payload.Job.", "Allocation": "Payload.Allocation.Job."} {
		for _, p := range paths {
			f[topic] = append(f[topic], root+p)
		}
	}
	l, err := NewLocator(f)
	if err != nil {
		b.Fatal(err)
	}
	benchDecodeWrite(b, l)
}

func benchDecodeWrite(b *testing.B, loc *Locator) {
	data := benchStream(b)
	s := NewStreamer(nil, Config{Locate: loc})
	s.h = NewLines(io.Discard, LinesOptions{Replace: []byte(`"REDACTED"`)})
	s.lines = newLineReader(64<<10, s.cfg.MaxFrameBytes)
	rd := bytes.NewReader(data)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(data)
		s.lines.reset(rd)
		s.r = resumeState{}
		live, first := false, true
		for {
			line, err := s.lines.next()
			if err != nil {
				break
			}
			if err := s.line(line, &live, &first); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.idle(); err != nil {
			b.Fatal(err)
		}
	}
	if got := s.stats.Snapshot().Events; got != uint64(400*b.N) {
		b.Fatalf("got %d events, want %d", got, 400*b.N)
	}
}

// BenchmarkBaselineDecodeWrite is the usual approach on the same bytes:
// api.EventStream's decoding into api.Events, then json.Marshal per event.
func BenchmarkBaselineDecodeWrite(b *testing.B) {
	data := benchStream(b)
	out := bufio.NewWriterSize(io.Discard, 64<<10)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		dec := json.NewDecoder(bytes.NewReader(data))
		n := 0
		for {
			var evs api.Events
			if err := dec.Decode(&evs); err != nil {
				break
			}
			for _, e := range evs.Events {
				line, err := json.Marshal(e)
				if err != nil {
					b.Fatal(err)
				}
				out.Write(line)
				out.WriteByte('\n')
				n++
			}
			out.Flush()
		}
		if n != 400 {
			b.Fatalf("got %d events, want 400", n)
		}
	}
}
