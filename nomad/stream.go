package nomad

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/backoff"
)

// Newest, as a start index, asks Nomad for the newest frame it buffers: an
// index above everything buffered starts there (docs/eventlog.md),
// so a fresh start prints one old frame rather than replaying a hundred.
// It is MaxInt64 rather than MaxUint64 so that it parses as either.
const Newest uint64 = math.MaxInt64

// Position is where a Streamer starts.
type Position struct {
	Index uint64
	// Written says Index is the last frame already written (a resume from a
	// state file). Nomad is asked for it again: when it comes back first it is
	// dropped, a higher first index is reported as a gap and a lower one as a
	// rebuilt history. Otherwise the stream simply starts at Index, inclusive.
	Written bool
	// Frames is how many frames at Index were written (Nomad may send one
	// index's events in several frames): a resume drops that many and writes
	// the rest. 0 means every frame at Index was written.
	Frames int
}

// Config tunes a Streamer. Zero values take the defaults.
type Config struct {
	Subscription

	// HeartbeatTimeout: a connection that delivers no byte for this long is
	// dead, whatever TCP says (Nomad sends `{}` every 30 s). 0 disables it.
	HeartbeatTimeout time.Duration
	// MaxFrameBytes bounds one line of the stream (default 64 MiB), and so
	// the memory one frame may take. A longer frame is skipped: read to its
	// end without being kept, logged at ERROR, counted in Stats, and the
	// stream goes on after its index.
	MaxFrameBytes int
	// BufferSize is the size of the output buffer (default 64 KiB).
	BufferSize int

	Backoff        backoff.Policy // default DefaultBackoff
	RefusedBackoff backoff.Policy // default RefusedBackoff
	// AlertAfter: an outage is logged again at ERROR each time it has lasted
	// another AlertAfter (default 6h).
	AlertAfter time.Duration

	Logger *slog.Logger // default: discard
	Stats  *Stats       // default: a private one

	// Transform, if set, is given each event (compact, as Nomad sent it)
	// with its topic, and returns the line to write in its place (e.g.
	// with secrets redacted); the result need only be valid until the next
	// call. An error stops the stream.
	Transform func(topic string, event []byte) ([]byte, error)

	// Flushed, if set, is called after each flush of the output with the
	// position of the last frame whose events have all reached the writer:
	// what the writer holds up to that call is exactly the frames up to
	// that position. It may block; the stream is not read meanwhile, as when
	// the writer blocks.
	Flushed func(Position)

	// Injectable for tests.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	Rand  func() float64
}

// Streamer copies Nomad's event stream to a writer, one event per line,
// resuming after every drop without loss or repetition. Its Run method is
// not safe for concurrent use; Stats may be read at any time.
type Streamer struct {
	client *Client
	cfg    Config
	log    *slog.Logger
	stats  *Stats
	outage outage

	// Owned by Run.
	parser  frameParser
	out     *bufio.Writer
	br      *bufio.Reader
	long    []byte   // a line longer than the read buffer, whole
	pieces  [][]byte // such a line while it is read
	cur     int      // the piece being filled
	held    int      // the capacity of the pieces
	compact bytes.Buffer
	last    uint64               // index of the last frame fully written to out
	known   bool                 // last is meaningful
	topics  map[string]topicStat // by name: see topic
	// atLast counts the frames written at index last (0: unknown, after a
	// Position); repeat, those a resume still drops (-1: every one). See
	// admit.
	atLast, repeat int
	seed           maphash.Seed
	hashes         map[uint64][]int
}

// NewStreamer returns a Streamer reading through client.
func NewStreamer(client *Client, cfg Config) *Streamer {
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = 64 << 20
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = 64 << 10
	}
	if cfg.Backoff == (backoff.Policy{}) {
		cfg.Backoff = DefaultBackoff
	}
	if cfg.RefusedBackoff == (backoff.Policy{}) {
		cfg.RefusedBackoff = RefusedBackoff
	}
	if cfg.AlertAfter <= 0 {
		cfg.AlertAfter = 6 * time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	return &Streamer{
		client: client,
		cfg:    cfg,
		log:    cfg.Logger,
		stats:  cfg.Stats,
		outage: outage{log: cfg.Logger, now: cfg.Now, alertAfter: cfg.AlertAfter, stats: cfg.Stats},
		topics: map[string]topicStat{},
		seed:   maphash.MakeSeed(),
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Stats returns the Streamer's counters.
func (s *Streamer) Stats() *Stats { return s.stats }

// WriteError is a failure to write events to the output: it ends Run.
type WriteError struct{ Err error }

func (e *WriteError) Error() string { return "writing events: " + e.Err.Error() }
func (e *WriteError) Unwrap() error { return e.Err }

// Run streams until ctx is done, then flushes w and returns nil. It returns
// early only when writing to w fails (a *WriteError).
func (s *Streamer) Run(ctx context.Context, w io.Writer, start Position) error {
	s.out = bufio.NewWriterSize(w, s.cfg.BufferSize)
	s.br = bufio.NewReaderSize(nil, 64<<10)
	s.last, s.known = start.Index, start.Written
	if s.known {
		s.atLast = max(start.Frames, 0)
		s.stats.lastIndex.Store(s.last)
		s.stats.setFlushed(s.position())
	}
	attempt := 0
	for sessions := 0; ; sessions++ {
		if sessions > 0 {
			s.stats.reconnects.Add(1)
		}
		index := start.Index
		if s.known {
			index = s.last
		}
		live, err := s.session(ctx, index)
		if ferr := s.flush(); ferr != nil {
			return ferr
		}
		var werr *WriteError
		if errors.As(err, &werr) {
			return werr
		}
		if ctx.Err() != nil {
			return nil
		}
		if live {
			attempt = 0
		}
		attempt++
		refused := isRefused(err)
		b := s.cfg.Backoff
		if refused {
			b = s.cfg.RefusedBackoff
			s.stats.refusals.Add(1)
		}
		delay := b.Delay(attempt, s.cfg.Rand())
		s.outage.failed(err, refused, attempt, delay)
		if s.cfg.Sleep(ctx, delay) != nil {
			return nil
		}
	}
}

var errHeartbeat = errors.New("heartbeat timeout")

// frameTooLarge is a line longer than MaxFrameBytes, read to its end (or to
// the end of the stream) without being kept.
type frameTooLarge struct {
	index   uint64 // read from the frame's end or start
	indexOK bool
	read    int   // bytes read, the newline included when it came
	err     error // what ended the stream before the newline; nil when it came
}

func (e *frameTooLarge) Error() string {
	return fmt.Sprintf("reading the stream: a frame is larger than the limit (%d bytes read)", e.read)
}

// RefusedError: Nomad would not serve the subscription. Retrying soon will
// not help; a longer backoff applies.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// ClosedError: Nomad ended a live subscription. Text is the plain-text
// reason older servers (≤ 1.11.1) append to the stream, if any, and Meaning
// what it means when it is a known one.
type ClosedError struct{ Text, Meaning string }

func (e *ClosedError) Error() string {
	switch {
	case e.Text == "":
		return "Nomad closed the stream (server shutdown, leadership change, token or ACL change, or this reader fell more than the buffer behind)"
	case e.Meaning == "":
		return fmt.Sprintf("Nomad closed the stream: %q", e.Text)
	}
	return fmt.Sprintf("Nomad closed the stream: %q: %s", e.Text, e.Meaning)
}

// legacyTails are the texts older servers end a stream with, and what they mean.
var legacyTails = []struct {
	prefix  string
	meaning string
	refused bool
}{
	{"subscription closed by server", "the server ended the subscription (token or ACL change, leadership change); resubscribing", false},
	{"ACL token expired", "the token expired; reading it again and resubscribing", true},
	{"event dropped from buffer", "this reader fell too far behind and Nomad dropped its subscription; resuming, a gap will be reported if events were lost", false},
	{"Permission denied", "the token may not read the requested topics or namespace", true},
}

func tailError(text string) error {
	for _, t := range legacyTails {
		if strings.HasPrefix(text, t.prefix) {
			msg := fmt.Sprintf("Nomad closed the stream: %q: %s", text, t.meaning)
			if t.refused {
				return &RefusedError{Reason: msg}
			}
			return &ClosedError{Text: text, Meaning: t.meaning}
		}
	}
	return &ClosedError{Text: text}
}

func isRefused(err error) bool {
	var r *RefusedError
	if errors.As(err, &r) {
		return true
	}
	var h *HTTPError
	if errors.As(err, &h) {
		switch h.Status {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed:
			return true
		}
	}
	return false
}

// netReader is the stream's body as the line reader sees it: before blocking
// on the network it flushes the output (so events show up as soon as the
// stream goes idle, and a busy stream costs one write per read), and it arms
// the heartbeat timer only while waiting for the network, never while the
// output is blocked.
type netReader struct {
	s       *Streamer
	body    io.Reader
	timer   *time.Timer
	timeout time.Duration
	werr    error
}

func (r *netReader) Read(p []byte) (int, error) {
	if err := r.s.flush(); err != nil {
		r.werr = err
		return 0, err
	}
	if r.timer != nil {
		r.timer.Reset(r.timeout)
	}
	n, err := r.body.Read(p)
	if r.timer != nil {
		r.timer.Stop()
	}
	r.s.stats.bytesRead.Add(uint64(n))
	return n, err
}

// session runs one subscription until it ends. live reports whether Nomad
// accepted it (its first `{}` arrived).
func (s *Streamer) session(ctx context.Context, index uint64) (live bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer func() {
		if live {
			s.stats.live.Store(false)
			s.stats.downSince.Store(s.cfg.Now().UnixNano())
		}
	}()
	var timer *time.Timer
	if d := s.cfg.HeartbeatTimeout; d > 0 {
		timer = time.AfterFunc(d, func() { cancel(errHeartbeat) })
		defer timer.Stop()
	}
	body, err := s.client.open(ctx, s.cfg.Subscription, index)
	if timer != nil {
		timer.Stop()
	}
	if err != nil {
		if context.Cause(ctx) == errHeartbeat {
			return false, fmt.Errorf("subscribing: no answer within %s", s.cfg.HeartbeatTimeout)
		}
		var h *HTTPError
		if errors.As(err, &h) {
			return false, err
		}
		return false, fmt.Errorf("subscribing: %w", err)
	}
	defer body.Close()
	s.log.Debug("subscribing", "index", index)
	nr := &netReader{s: s, body: body, timer: timer, timeout: s.cfg.HeartbeatTimeout}
	s.br.Reset(nr)
	defer s.br.Reset(nil)

	first := true // no frame yet in this session
	for {
		line, rerr := s.readLine()
		var big *frameTooLarge
		if errors.As(rerr, &big) {
			s.skip(big, &first)
			if big.err == nil {
				continue
			}
			line, rerr = nil, big.err
		}
		if rerr == nil {
			if err := s.line(line, &live, &first); err != nil {
				return live, err
			}
			continue
		}
		if nr.werr != nil {
			return live, nr.werr
		}
		err = s.ended(ctx, line, rerr, &live, &first)
		return live, err
	}
}

// ended handles the end of a session's stream, which rerr ended: the last
// line, if it came without its newline, then the error saying why the
// stream ended.
func (s *Streamer) ended(ctx context.Context, line []byte, rerr error, live, first *bool) error {
	if len(bytes.TrimSpace(line)) > 0 {
		// A last line without its newline: a whole frame (the server
		// writes a frame and its newline separately, and the cut fell
		// between them), a frame cut short, or an older server's error.
		switch perr := s.parser.parse(line); {
		case perr == nil:
			if err := s.line(line, live, first); err != nil {
				return err
			}
		case perr == errNotJSON:
			return tailError(string(bytes.TrimSpace(line)))
		default:
			s.log.Debug("stream cut in the middle of a frame", "bytes", len(line))
		}
	}
	// Nomad answers a subscription it refuses (no token, an unknown one, a
	// policy without read on the topic) with 200 and then nothing, not even
	// the `{}` it sends within milliseconds of accepting one, and closes
	// the connection about 30 s later (recorded from Nomad 2.0.5). So a
	// stream that ends, or stays silent past the heartbeat bound, before its
	// first `{}` was refused, not cut.
	const why = "(check the token, that its ACL policy may read the requested topics and namespace, and that the event broker is enabled)"
	switch {
	case context.Cause(ctx) == errHeartbeat && !*live:
		return &RefusedError{Reason: fmt.Sprintf("Nomad answered but sent nothing, not even a heartbeat, for %s: "+
			"the subscription was refused or the token has no permission %s", s.cfg.HeartbeatTimeout, why)}
	case context.Cause(ctx) == errHeartbeat:
		return fmt.Errorf("no frame and no heartbeat for %s: the connection is dead", s.cfg.HeartbeatTimeout)
	case ctx.Err() != nil:
		return ctx.Err()
	case rerr == io.EOF && !*live:
		return &RefusedError{Reason: "Nomad closed the stream before its first heartbeat: " +
			"the subscription was refused or the token has no permission " + why}
	case rerr == io.EOF:
		return &ClosedError{}
	}
	return fmt.Errorf("reading the stream: %w", rerr)
}

// line handles one line of the stream.
func (s *Streamer) line(line []byte, live, first *bool) error {
	if len(line) == 0 {
		return nil
	}
	if err := s.parser.parse(line); err != nil {
		if err == errNotJSON {
			if t := bytes.TrimSpace(line); len(t) > 0 {
				return tailError(string(t))
			}
			return nil
		}
		return fmt.Errorf("reading the stream: invalid frame: %w", err)
	}
	if !*live {
		*live = true
		s.stats.live.Store(true)
		s.stats.downSince.Store(0)
		s.outage.recovered()
	}
	if s.parser.heartbeat {
		s.stats.heartbeats.Add(1)
		return nil
	}
	wasFirst := *first
	*first = false
	return s.frame(line, wasFirst)
}

// admit applies the resume rules to the frame at idx, reporting a gap or a
// history reset, and says whether the frame is new: the frames a resume
// asked for again are not, nor is one out of order.
//
// Nomad may send one index's events in several frames (a registration's Job
// and Evaluation events: testdata split-index.ndjson, recorded on Nomad
// 2.0.5), and a subscription at an index starts with the first of them. So
// the Streamer counts the frames it wrote at the last index (atLast, kept in
// Position.Frames across restarts), and a resume drops that many frames at
// it and writes the rest; a count of 0 (a Position from before it was kept)
// takes every frame at the index as written.
func (s *Streamer) admit(idx uint64, first bool) bool {
	if !s.known {
		return true
	}
	if first {
		s.repeat = s.atLast
		if s.repeat == 0 {
			s.repeat = -1 // all of them
		}
	}
	switch {
	case idx == s.last && s.repeat != 0:
		if first {
			s.log.Debug("resumed without a gap", "index", idx)
		}
		if s.repeat > 0 {
			s.repeat--
		}
		return false
	case idx == s.last:
		return true // a further frame of the index last written
	case first && idx > s.last:
		s.stats.gaps.Add(1)
		s.log.Warn("gap in the event stream: Nomad no longer buffered the last written index, events between the two indexes (exclusive) may be lost",
			"last_written", s.last, "first_received", idx)
	case first && idx < s.last:
		s.stats.resets.Add(1)
		s.log.Warn("Nomad's event history went backwards (cluster rebuilt or restored from a snapshot?): carrying on from the new history",
			"last_written", s.last, "first_received", idx)
	case idx < s.last:
		s.log.Warn("frame out of order within a subscription: dropped", "index", idx, "last_written", s.last)
		return false
	}
	s.repeat = 0
	return true
}

// wrote records that a frame at idx was written (or skipped as too large):
// the resume position moves to it.
func (s *Streamer) wrote(idx uint64) {
	if s.known && idx == s.last && s.atLast > 0 {
		s.atLast++
	} else {
		s.atLast = 1
	}
	s.last, s.known = idx, true
	s.stats.lastIndex.Store(idx)
}

// skip reports a frame over MaxFrameBytes and moves the resume index past
// it, so that a resume does not read it again: Nomad sends it first, as the
// frame at the resume index, and admit drops it.
//
// A frame cut off by the end of the stream before its index was read is not
// skipped: the resume asks for it again, and it is judged whole then (Nomad
// writes the index last, so a cut frame's index is rarely known).
func (s *Streamer) skip(big *frameTooLarge, first *bool) {
	s.stats.lastFrame.Store(s.cfg.Now().UnixNano())
	if !big.indexOK && big.err != nil {
		s.log.Debug("an oversize frame was cut off before its index: the resume reads it again", "bytes_read", big.read)
		return
	}
	wasFirst := *first
	*first = false
	attrs := []any{"last_written", s.last}
	if !s.known {
		attrs = attrs[:0]
	}
	if big.indexOK {
		if !s.admit(big.index, wasFirst) {
			return
		}
		attrs = append(attrs, "skipped_index", big.index)
	}
	if big.err == nil {
		attrs = append(attrs, "bytes", big.read-1)
	} else {
		attrs = append(attrs, "bytes_read", big.read) // the stream ended first
	}
	attrs = append(attrs, "max_frame_bytes", s.cfg.MaxFrameBytes)
	s.stats.skipped.Add(1)
	msg := "frame skipped: larger than the frame size limit, its events are lost; the stream goes on after it"
	if !big.indexOK {
		msg = "frame skipped: larger than the frame size limit, its events are lost, and its index could not be read; the stream goes on after it"
	}
	s.log.Error(msg, attrs...)
	if big.indexOK {
		s.wrote(big.index)
	}
}

// frame writes the events of one frame, applying the resume rules.
func (s *Streamer) frame(line []byte, first bool) error {
	idx := s.parser.index
	s.stats.lastFrame.Store(s.cfg.Now().UnixNano())
	if len(s.parser.events) == 0 {
		return nil // nothing written: the resume index stays where it is
	}
	if !s.admit(idx, first) {
		return nil
	}
	written := 0
	for k, ev := range s.parser.events {
		raw := line[ev.start:ev.end]
		if s.repeated(line, k) {
			s.stats.duplicates.Add(1)
			continue
		}
		if !ev.compact {
			s.compact.Reset()
			if err := json.Compact(&s.compact, raw); err != nil {
				return fmt.Errorf("reading the stream: invalid event: %w", err)
			}
			raw = s.compact.Bytes()
		}
		topic := s.topic(line[ev.topicStart:ev.topicEnd])
		if s.cfg.Transform != nil {
			var err error
			if raw, err = s.cfg.Transform(topic.name, raw); err != nil {
				return fmt.Errorf("event at index %d: %w", idx, err)
			}
		}
		if err := s.writeLine(raw); err != nil {
			return err
		}
		topic.events.Add(1)
		written++
	}
	s.stats.events.Add(uint64(written))
	s.stats.frames.Add(1)
	s.wrote(idx)
	return nil
}

// repeated reports whether event k of the frame repeats an earlier one (Nomad
// sends an event once per subscribed key it matches).
func (s *Streamer) repeated(line []byte, k int) bool {
	evs := s.parser.events
	raw := line[evs[k].start:evs[k].end]
	if len(evs) <= 16 {
		for _, e := range evs[:k] {
			if bytes.Equal(line[e.start:e.end], raw) {
				return true
			}
		}
		return false
	}
	if k == 0 {
		clear(s.hashes)
		if s.hashes == nil {
			s.hashes = map[uint64][]int{}
		}
	}
	h := maphash.Bytes(s.seed, raw)
	for _, j := range s.hashes[h] {
		if bytes.Equal(line[evs[j].start:evs[j].end], raw) {
			return true
		}
	}
	s.hashes[h] = append(s.hashes[h], k)
	return false
}

// topicStat is one topic's name, kept from one event to the next, and its
// event counter.
type topicStat struct {
	name   string
	events *atomic.Uint64
}

// topic returns the topic named b (a lookup by string(b) does not
// allocate); the map is bounded by the topics Nomad sends.
func (s *Streamer) topic(b []byte) topicStat {
	if t, ok := s.topics[string(b)]; ok {
		return t
	}
	name := string(b)
	t := topicStat{name: name, events: s.stats.topicCounter(name)}
	s.topics[name] = t
	return t
}

// writeLine buffers one event line. A line that does not fit in what is left
// of the buffer flushes it first, so that writes end on line boundaries.
func (s *Streamer) writeLine(b []byte) error {
	if len(b)+1 > s.out.Available() && s.out.Buffered() > 0 {
		if err := s.out.Flush(); err != nil {
			return &WriteError{err}
		}
	}
	if _, err := s.out.Write(b); err != nil {
		return &WriteError{err}
	}
	if err := s.out.WriteByte('\n'); err != nil {
		return &WriteError{err}
	}
	return nil
}

// flush writes out the buffered events; every frame up to s.last has then
// reached the writer.
func (s *Streamer) flush() error {
	if s.out.Buffered() > 0 {
		if err := s.out.Flush(); err != nil {
			return &WriteError{err}
		}
	}
	if s.known {
		pos := s.position()
		s.stats.setFlushed(pos)
		if s.cfg.Flushed != nil {
			s.cfg.Flushed(pos)
		}
	}
	return nil
}

// position is where the frames written so far end.
func (s *Streamer) position() Position {
	return Position{Index: s.last, Written: true, Frames: s.atLast}
}

// readLine returns the next line without its newline. At the end of the
// stream it returns what is left (a last line without a newline) and the
// error. A line longer than MaxFrameBytes is not kept: it is read to its end
// and dropped, and readLine returns a *frameTooLarge saying what is known of
// it.
//
// A line longer than the read buffer is kept in pieces while it is read
// (pieces are never copied to grow, and add up to MaxFrameBytes at most), and
// copied into one buffer of its exact size once its newline has come: a
// frame over the limit costs at most the limit, one within it twice its size.
func (s *Streamer) readLine() ([]byte, error) {
	limit := s.cfg.MaxFrameBytes
	if cap(s.long) > 1<<20 {
		s.long = nil // do not keep a past multi-megabyte frame's memory
	}
	line, err := s.br.ReadSlice('\n')
	if err != bufio.ErrBufferFull {
		content := line
		if err == nil {
			content = line[:len(line)-1]
		}
		if len(content) > limit {
			return nil, s.discard(line, line, len(line), err)
		}
		return content, err
	}
	for i := range s.pieces {
		s.pieces[i] = s.pieces[i][:0]
	}
	s.cur = 0
	n := 0 // bytes kept
	for {
		content := line
		if err == nil {
			content = line[:len(line)-1]
		}
		if n+len(content) > limit {
			prefix := line
			if n > 0 {
				prefix = s.pieces[0]
			}
			return nil, s.discard(prefix, line, n+len(line), err)
		}
		s.keep(content)
		n += len(content)
		switch err {
		case nil:
			return s.join(n), nil
		case bufio.ErrBufferFull:
		default:
			return s.join(n), err
		}
		line, err = s.br.ReadSlice('\n')
	}
}

// keep copies b to the pieces, adding a piece when they are full: twice the
// last one, but never more than what is left of MaxFrameBytes.
func (s *Streamer) keep(b []byte) {
	for len(b) > 0 {
		if s.cur == len(s.pieces) {
			c := 64 << 10
			if s.cur > 0 {
				c = 2 * cap(s.pieces[s.cur-1])
			}
			c = min(c, s.cfg.MaxFrameBytes-s.held) // > 0: held is what is kept, less than the line
			s.pieces = append(s.pieces, make([]byte, 0, c))
			s.held += c
		}
		p := s.pieces[s.cur]
		k := min(len(b), cap(p)-len(p))
		s.pieces[s.cur] = append(p, b[:k]...)
		b = b[k:]
		if len(s.pieces[s.cur]) == cap(p) {
			s.cur++
		}
	}
}

// join returns the n bytes kept in the pieces as one line. Pieces of up to
// 1 MiB in all are kept for the next long line; more are let go.
func (s *Streamer) join(n int) []byte {
	if cap(s.long) < n {
		s.long = make([]byte, 0, n)
	}
	s.long = s.long[:0]
	for _, p := range s.pieces {
		s.long = append(s.long, p...)
	}
	if s.held > 1<<20 {
		s.pieces, s.held = nil, 0
	}
	return s.long
}

// discard reads the rest of an oversize line and drops it. prefix is its
// first bytes, last the latest bytes read, read how many were read, err the
// last read's error. The frame's index is read from its end, where Nomad
// 2.0.5 writes it (`{"Events":[...],"Index":N}`, recorded in transcripts
// B1–B3), or from its start, where other encoders put it.
func (s *Streamer) discard(prefix, last []byte, read int, err error) *frameTooLarge {
	big := &frameTooLarge{read: read}
	big.index, big.indexOK = leadingIndex(prefix)
	s.pieces, s.held = nil, 0 // their memory can go now
	var tail [tailBytes]byte
	t := appendTail(tail[:0], last)
	for err == bufio.ErrBufferFull {
		var line []byte
		line, err = s.br.ReadSlice('\n')
		big.read += len(line)
		t = appendTail(t, line)
	}
	big.err = err
	if !big.indexOK && err == nil {
		big.index, big.indexOK = trailingIndex(t)
	}
	return big
}

// tailBytes is how much of a dropped frame's end is kept to read its index:
// `],"Index":18446744073709551615}` and the newline fit.
const tailBytes = 48

// appendTail appends b to t and keeps the last tailBytes bytes, in t's
// array (cap tailBytes).
func appendTail(t, b []byte) []byte {
	if len(b) >= tailBytes {
		return append(t[:0], b[len(b)-tailBytes:]...)
	}
	if drop := len(t) + len(b) - tailBytes; drop > 0 {
		t = append(t[:0], t[drop:]...)
	}
	return append(t, b...)
}

// trailingIndex reads N from a line that ends `],"Index":N}`, as Nomad
// writes every frame: the `]` closing the Events array keeps an "Index"
// nested in the last event's payload from being taken for it.
func trailingIndex(b []byte) (uint64, bool) {
	b = bytes.TrimRight(b, " \t\r\n")
	b, ok := bytes.CutSuffix(b, []byte("}"))
	if !ok {
		return 0, false
	}
	b = bytes.TrimRight(b, " \t\r\n")
	i := len(b)
	for i > 0 && b[i-1] >= '0' && b[i-1] <= '9' {
		i--
	}
	digits := b[i:]
	if len(digits) == 0 || len(digits) > 20 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(string(digits), 10, 64)
	if err != nil {
		return 0, false
	}
	rest := bytes.TrimRight(b[:i], " \t\r\n")
	for _, want := range []string{":", `"Index"`, ",", "]"} {
		var ok bool
		if rest, ok = bytes.CutSuffix(rest, []byte(want)); !ok {
			return 0, false
		}
		rest = bytes.TrimRight(rest, " \t\r\n")
	}
	return n, true
}

// leadingIndex reads N from a frame that starts `{"Index":N,`, as Nomad
// writes every frame.
func leadingIndex(b []byte) (uint64, bool) {
	var p frameParser
	i := p.ws(b, 0)
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i = p.ws(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	end, err := scanString(b, i)
	if err != nil || string(b[i+1:end-1]) != "Index" {
		return 0, false
	}
	if i, err = p.colon(b, end); err != nil {
		return 0, false
	}
	n, i, err := scanUint(b, i)
	if err != nil || i >= len(b) { // digits up to the end may be cut short
		return 0, false
	}
	return n, true
}
