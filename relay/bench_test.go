package relay

import (
	"bufio"
	"bytes"
	"fmt"

	"net"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// BenchmarkRelayFanout: one relay serving 200 subscribers over loopback
// TCP, each update a realistic Job frame of a few KB. ns/update/sub is
// the wall time of an update's delivery divided by the subscribers: on a
// saturated machine it bounds the CPU one update costs per subscriber.
func BenchmarkRelayFanout(b *testing.B) {
	const subs = 200
	frame := []byte(fmt.Sprintf(`{"Events":[%s],"Index":1}`, nomadtest.Encode(nomadtest.JobEvent(1, "web", "default"))))
	h := NewHistory(HistoryOptions{})
	srv := httptest.NewServer(&Server{History: h, MaxSubscribers: subs})
	defer srv.Close()
	var got atomic.Int64 // frames read, all subscribers
	var wg sync.WaitGroup
	conns := make([]net.Conn, subs)
	for i := range conns {
		c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		fmt.Fprintf(c, "GET /v1/event/stream?topic=Job&index=0 HTTP/1.1\r\nHost: relay\r\n\r\n")
		br := bufio.NewReaderSize(c, 256<<10)
		for { // header and the first {}
			l, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal(err)
			}
			if bytes.Equal(l, []byte("{}\n")) {
				break
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				l, err := br.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(l) > 3 {
					got.Add(1)
				}
			}
		}()
	}
	const batch = 64
	b.SetBytes(int64(len(frame) + 1))
	b.ResetTimer()
	sent := 0
	for b.Loop() {
		sent++
		h.Add(uint64(sent), frame)
		if sent%batch == 0 {
			waitFor(&got, int64(sent*subs))
		}
	}
	waitFor(&got, int64(sent*subs))
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(sent)/subs, "ns/update/sub")
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()

}

// waitFor spins, yielding, until n frames were read: the subscribers'
// goroutines do the work meanwhile.
func waitFor(got *atomic.Int64, n int64) {
	for got.Load() < n {
		runtimeGosched()
	}
}

var runtimeGosched = runtime.Gosched
