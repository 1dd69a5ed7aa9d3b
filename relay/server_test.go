package relay

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestHeartbeats: the first `{}` at once, then one each Heartbeat, on a
// fake clock.
func TestHeartbeats(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &Server{History: NewHistory(HistoryOptions{}), Heartbeat: 10 * time.Second, WriteTimeout: -1}
		srv, cli := net.Pipe()
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); s.stream(ctx, srv, bufio.NewWriter(srv), 0) }()
		br := bufio.NewReader(cli)
		for { // the header
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if l == "\r\n" {
				break
			}
		}
		start := time.Now()
		for i := range 3 {
			l, err := br.ReadString('\n')
			if err != nil || l != "{}\n" {
				t.Fatalf("line %d: %q, %v; want a heartbeat", i, l, err)
			}
			if got := time.Since(start); got != time.Duration(i)*10*time.Second {
				t.Errorf("heartbeat %d after %s", i, got)
			}
		}
		cancel()
		cli.Close()
		<-done
	})
}

// TestSlowReaderCut: a reader lagging past MaxBacklog is cut off with
// ErrSlow while another keeps reading everything.
func TestSlowReaderCut(t *testing.T) {
	h := NewHistory(HistoryOptions{MaxBytes: 1000, MaxFrameBytes: 100, MaxBacklog: 200})
	cut := make(chan struct{})
	slow := h.NewReader(0, func() { close(cut) })
	fast := h.NewReader(0, nil)
	var got [][]byte
	for i := 1; i <= 10; i++ {
		h.Add(uint64(i), []byte(strings.Repeat("x", 49)))
		var err error
		got, _, err = fast.Next(got)
		if err != nil {
			t.Fatalf("fast reader: %v", err)
		}
	}
	<-cut
	if _, _, err := slow.Next(nil); !errors.Is(err, ErrSlow) {
		t.Errorf("slow reader: %v, want ErrSlow", err)
	}
	if len(got) != 10 {
		t.Errorf("fast reader read %d frames, want 10", len(got))
	}
}

// TestHistoryBounds: oldest dropped first, the floor above what was
// dropped, a split index partly dropped not resumable, a break clearing it.
func TestHistoryBounds(t *testing.T) {
	h := NewHistory(HistoryOptions{MaxBytes: 30, MaxFrameBytes: 30})
	for _, i := range []uint64{1, 2, 2, 3} {
		h.Add(i, []byte("123456789")) // 10 bytes with its newline
	}
	if n, b := h.Len(); n != 3 || b != 30 {
		t.Errorf("len %d, %d bytes; want 3, 30", n, b)
	}
	h.Add(4, []byte("123456789")) // drops the first frame of 2
	if f := h.Floor(); f != 3 {
		t.Errorf("floor %d, want 3 (index 2 is partly dropped)", f)
	}
	r := h.NewReader(2, nil)
	lines, _, _ := r.Next(nil)
	if len(lines) != 2 { // 3 and 4
		t.Errorf("from 2: %d frames, want 2 (3 and 4)", len(lines))
	}
	h.Add(5, make([]byte, 40)) // over MaxFrameBytes: a break
	if f := h.Floor(); f != 6 {
		t.Errorf("floor after an oversize frame %d, want 6", f)
	}
	if _, _, err := r.Next(nil); !errors.Is(err, ErrBreak) {
		t.Errorf("reader across a break: %v, want ErrBreak", err)
	}
}
