// Command server serves a generated event stream for bench/eventlog.sh: the
// in-process test server of internal/nomadtest, on 127.0.0.1, prefilled with
// realistic Allocation and Job events (a few KB each).
//
// It prints one line, "URL FRAMES EVENTS BYTES", once ready, then serves until
// SIGINT/SIGTERM. BYTES is the size of the stream's frames (newlines
// included), the same for every client that reads them all. With
// -big-frame-bytes, one more frame of exactly that size (one Job event) comes
// after the first half of the frames, for bench/eventlog-bigframe.sh; it is
// counted in FRAMES, EVENTS and BYTES.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address (loopback only)")
	frames := flag.Int("frames", 20000, "frames to prefill")
	perFrame := flag.Int("events-per-frame", 2, "events per frame")
	drained := flag.Bool("close-when-drained", true, "end each subscription after the last frame (so curl exits)")
	chunked := flag.Bool("chunked", false, "serve as Nomad ≤ 1.11.1 (chunked)")
	heartbeat := flag.Duration("heartbeat", 30*time.Second, "heartbeat interval")
	bigFrame := flag.Int("big-frame-bytes", 0, "add one frame of exactly this many bytes after the first half (0: none)")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		fmt.Fprintln(os.Stderr, "server: refusing a non-loopback address", ip)
		os.Exit(2)
	}
	mode := nomadtest.CloseDelimited
	if *chunked {
		mode = nomadtest.Chunked
	}
	srv := nomadtest.NewWithListener(ln, nomadtest.Options{
		Mode: mode, BufferSize: *frames + 1, Heartbeat: *heartbeat, CloseWhenDrained: *drained,
		Namespaces: []string{"default", "prod"},
	})
	events, size, total := 0, 0, *frames
	var last uint64
	for i := range *frames {
		if *bigFrame > 0 && i == *frames/2 {
			e, err := bigEvent(last+1, *bigFrame)
			if err != nil {
				fmt.Fprintln(os.Stderr, "server:", err)
				os.Exit(2)
			}
			last++
			srv.PublishAt(last, e)
			events, size, total = events+1, size+*bigFrame+1, total+1
		}
		evs := make([]nomadtest.Event, *perFrame)
		for k := range evs {
			ns := []string{"default", "prod"}[i%2]
			job := fmt.Sprintf("svc-%d", i%40)
			if (i*(*perFrame)+k)%4 == 3 {
				evs[k] = nomadtest.JobEvent(i, job, ns)
			} else {
				evs[k] = nomadtest.AllocationEvent(i*(*perFrame)+k, job, ns)
			}
		}
		last = srv.Publish(evs...)
		events += len(evs)
		size += len(frameBytes(last, evs)) + 1
	}
	srv.Start()
	fmt.Printf("%s %d %d %d\n", srv.URL, total, events, size)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	<-ctx.Done()
	stop()
	srv.Close()
}

// bigEvent is a Job event whose frame at index is exactly size bytes.
func bigEvent(index uint64, size int) (nomadtest.Event, error) {
	e := nomadtest.Event{Topic: "Job", Type: "JobRegistered", Key: "big", Namespace: "default"}
	e.Payload = json.RawMessage(`{"Job":{"ID":"big","Blob":""}}`)
	pad := size - len(frameBytes(index, []nomadtest.Event{e}))
	if pad < 0 {
		return e, fmt.Errorf("-big-frame-bytes: a frame takes at least %d bytes", size-pad)
	}
	e.Payload = json.RawMessage(`{"Job":{"ID":"big","Blob":"` + strings.Repeat("x", pad) + `"}}`)
	return e, nil
}

// frameBytes is the frame as the server writes it.
func frameBytes(index uint64, evs []nomadtest.Event) []byte {
	b := fmt.Appendf(nil, `{"Index":%d,"Events":[`, index)
	for i, e := range evs {
		if i > 0 {
			b = append(b, ',')
		}
		e.Index = index
		b = append(b, nomadtest.Encode(e)...)
	}
	return append(b, "]}"...)
}
