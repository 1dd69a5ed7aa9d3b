package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"

	"sync"
	"time"
)

// Defaults of a Server.
const (
	DefaultHeartbeat      = 10 * time.Second
	DefaultMaxSubscribers = 256
	DefaultWriteTimeout   = 40 * time.Second
)

// ErrUnavailable marks an Authorize error that says the caller can't be
// checked now (Nomad's keys can't be fetched), rather than that it is
// refused.
var ErrUnavailable = errors.New("relay: callers can't be checked now")

// Server answers GET /v1/event/stream from a History, as Nomad would.
type Server struct {
	History *History
	// Namespace is the one the Feed's Streamer follows ("" and "default"
	// are Nomad's default; "*" every one): a request for another is
	// refused with 400 rather than served events it did not ask for.
	Namespace string
	// Authorize, if set, decides whether a request may subscribe, before
	// anything else is looked at: an error is a 403 with its text, or a
	// 503 when it wraps ErrUnavailable (the check itself can't be made
	// now). nil allows every request: the agent wiring must set it.
	Authorize func(*http.Request) error
	// Heartbeat is the `{}` interval (default 10 s).
	Heartbeat time.Duration
	// MaxSubscribers bounds concurrent subscriptions (default 256);
	// beyond it: 503.
	MaxSubscribers int
	// WriteTimeout closes a connection whose write blocks this long
	// (default 40 s, as Nomad).
	WriteTimeout time.Duration

	mu   sync.Mutex
	subs int
}

func (s *Server) heartbeat() time.Duration {
	if s.Heartbeat > 0 {
		return s.Heartbeat
	}
	return DefaultHeartbeat
}

// ServeHTTP serves one subscription: topic Job only (Job, Job:*), a
// namespace (the relay serves what it follows: the caller picks the
// upstream namespace), and index the way Nomad treats it (inclusive).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "Invalid method", http.StatusMethodNotAllowed)
		return
	}
	if s.Authorize != nil {
		if err := s.Authorize(r); err != nil {
			code := http.StatusForbidden
			if errors.Is(err, ErrUnavailable) {
				code = http.StatusServiceUnavailable
			}
			http.Error(w, err.Error(), code)
			return
		}
	}
	q := r.URL.Query()
	for _, t := range q["topic"] {
		if t != "Job" && t != "Job:*" {
			http.Error(w, fmt.Sprintf("relay serves only the Job topic (Job or Job:*), not %q", t), http.StatusBadRequest)
			return
		}
	}
	if len(q["topic"]) == 0 {
		http.Error(w, "relay serves only the Job topic: ask for topic=Job", http.StatusBadRequest)
		return
	}
	if ns, want := orDefault(q.Get("namespace")), orDefault(s.Namespace); ns != want {
		http.Error(w, fmt.Sprintf("relay follows namespace %q only, not %q", want, ns), http.StatusBadRequest)
		return
	}
	var index uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			http.Error(w, "Unable to parse index: "+err.Error(), http.StatusBadRequest)
			return
		}
		index = n
	}
	max := s.MaxSubscribers
	if max <= 0 {
		max = DefaultMaxSubscribers
	}
	s.mu.Lock()
	if s.subs >= max {
		s.mu.Unlock()
		http.Error(w, fmt.Sprintf("relay: too many subscribers (limit %d); retry later or follow Nomad directly", max), http.StatusServiceUnavailable)
		return
	}
	s.subs++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.subs--
		s.mu.Unlock()
	}()
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "relay: connection cannot be hijacked", http.StatusInternalServerError)
		return
	}
	c, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	s.stream(r.Context(), c, brw.Writer, index)
}

// stream writes the status line (Nomad ≥ 1.11.2: Connection: close, the
// body ends with the connection), a first `{}`, then every frame from
// index and a `{}` each Heartbeat.
func (s *Server) stream(ctx context.Context, c net.Conn, bw *bufio.Writer, index uint64) {
	var once sync.Once
	done := make(chan struct{})
	cut := func() { once.Do(func() { close(done); c.Close() }) }
	rd := s.History.NewReader(index, cut)
	defer rd.Close()
	wt := s.WriteTimeout
	if wt == 0 {
		wt = DefaultWriteTimeout
	}
	flush := func() bool {
		if wt > 0 {
			_ = c.SetWriteDeadline(time.Now().Add(wt))
		}
		return bw.Flush() == nil
	}
	bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{}\n")
	if !flush() {
		return
	}
	tick := time.NewTicker(s.heartbeat())
	defer tick.Stop()
	var buf [][]byte
	for {
		var wait <-chan struct{}
		var err error
		buf, wait, err = rd.Next(buf[:0])
		if err != nil {
			return
		}
		for _, l := range buf {
			if _, err := bw.Write(l); err != nil {
				return
			}
		}
		clear(buf)
		if len(buf) > 0 && !flush() {
			return
		}
		select {
		case <-wait:
		case <-tick.C:
			bw.WriteString("{}\n")
			if !flush() {
				return
			}
		case <-done:
			return
		case <-ctx.Done():
			return
		}
	}
}

func orDefault(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}
