package nomad

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Stats are the Streamer's counters, safe to read from any goroutine (for
// metrics, health checks and the state file) while the Streamer runs.
type Stats struct {
	frames     atomic.Uint64
	events     atomic.Uint64
	heartbeats atomic.Uint64
	duplicates atomic.Uint64
	reconnects atomic.Uint64
	refusals   atomic.Uint64
	gaps       atomic.Uint64
	resets     atomic.Uint64
	skipped    atomic.Uint64
	bytesRead  atomic.Uint64

	lastIndex atomic.Uint64 // last frame written to the buffer
	lastFrame atomic.Int64  // unix nanoseconds of the last frame received
	live      atomic.Bool
	refused   atomic.Bool  // the last attempt was refused by Nomad
	downSince atomic.Int64 // unix nanoseconds; 0 while live or before the first attempt

	lastErr atomic.Pointer[string] // why the stream was last down

	// flushed is the position of the last frame flushed to the writer: its
	// index and frame count change together, under a lock rather than as a
	// new pointer per flush (no allocation on the stream's path).
	flushedMu sync.Mutex
	flushed   Position

	mu     sync.Mutex
	topics map[string]*atomic.Uint64
}

// Discontinuities counts the places where the stream written is not exactly
// Nomad's: gaps, rebuilt histories and frames skipped for their size. A
// reader that keeps state from the events must rebuild it when this grows.
func (s *Stats) Discontinuities() uint64 {
	return s.gaps.Load() + s.resets.Load() + s.skipped.Load()
}

// LastError is why the stream was last down ("" if it never was).
func (s *Stats) LastError() string {
	if p := s.lastErr.Load(); p != nil {
		return *p
	}
	return ""
}

// StatsSnapshot is a copy of Stats at one moment.
type StatsSnapshot struct {
	Frames, Events, Heartbeats, Duplicates uint64
	Reconnects, Refusals, Gaps, Resets     uint64
	Skipped                                uint64 // frames over MaxFrameBytes
	BytesRead                              uint64
	LastIndex, FlushedIndex                uint64
	LastFrame                              time.Time // zero before the first frame
	Live, Refused                          bool
	DownSince                              time.Time // zero while live
	Topics                                 map[string]uint64
}

// Snapshot copies the counters.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		Frames:       s.frames.Load(),
		Events:       s.events.Load(),
		Heartbeats:   s.heartbeats.Load(),
		Duplicates:   s.duplicates.Load(),
		Reconnects:   s.reconnects.Load(),
		Refusals:     s.refusals.Load(),
		Gaps:         s.gaps.Load(),
		Resets:       s.resets.Load(),
		Skipped:      s.skipped.Load(),
		BytesRead:    s.bytesRead.Load(),
		LastIndex:    s.lastIndex.Load(),
		FlushedIndex: s.Flushed().Index,
		Live:         s.live.Load(),
		Refused:      s.refused.Load(),
		Topics:       map[string]uint64{},
	}
	if ns := s.lastFrame.Load(); ns != 0 {
		snap.LastFrame = time.Unix(0, ns)
	}
	if ns := s.downSince.Load(); ns != 0 {
		snap.DownSince = time.Unix(0, ns)
	}
	s.mu.Lock()
	for t, n := range s.topics {
		snap.Topics[t] = n.Load()
	}
	s.mu.Unlock()
	return snap
}

// FlushedIndex is the index of the last frame whose events all reached the
// writer (0: none yet).
func (s *Stats) FlushedIndex() uint64 { return s.Flushed().Index }

// Flushed is the position of the last frame whose events all reached the
// writer, with how many frames of its index did (the zero Position: none
// yet). It is what a state file must hold.
func (s *Stats) Flushed() Position {
	s.flushedMu.Lock()
	defer s.flushedMu.Unlock()
	return s.flushed
}

func (s *Stats) setFlushed(p Position) {
	s.flushedMu.Lock()
	s.flushed = p
	s.flushedMu.Unlock()
}

// TopicNames lists the topics seen so far, sorted.
func (s *Stats) TopicNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.topics))
	for t := range s.topics {
		names = append(names, t)
	}
	sort.Strings(names)
	return names
}

// topicCounter returns the counter of one topic, creating it.
func (s *Stats) topicCounter(topic string) *atomic.Uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.topics == nil {
		s.topics = map[string]*atomic.Uint64{}
	}
	c, ok := s.topics[topic]
	if !ok {
		c = new(atomic.Uint64)
		s.topics[topic] = c
	}
	return c
}
