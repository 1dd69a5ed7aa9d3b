// Package nomadtest is an in-process Nomad event stream server for tests and
// benchmarks. It follows Nomad's wire behaviour as docs/eventlog.md
// describes it (it is written from that description, not from Nomad's
// code): the inclusive index with its clamping rules, a buffer of the last
// N indexes that evicts, `{}` first and then on a ticker, topic, key and
// namespace filtering with their two quirks, both response modes
// (close-delimited as Nomad ≥ 1.11.2 sends it, chunked with plain-text error
// tails as Nomad ≤ 1.11.1 does), the 200-then-EOF of a refused subscription,
// and slow subscribers cut off once their next index has left the buffer.
//
// It also serves Nomad's variables with their locks (/v1/var/:path, vars.go),
// faithful to the answers recorded from Nomad 2.0.5 in testdata/: acquire,
// 409 while held, renew, the TTL that lapses after twice its length, the lock
// delay, CAS conflicts, the holder's writes and the release. Variable writes
// take raft indexes from the same counter as the stream's frames.
//
// And it parses and registers jobs (jobs.go), as transcript F recorded
// Nomad 2.0.5 doing it. It parses no HCL: POST /v1/jobs/parse answers the
// job a test registered with AddParse for that JobHCL and Variables text
// (Canonicalize false: the fields Canonicalize filled in for F's job set
// back to null), or AddParseError's 400, and a parse not registered is a
// 400 of the fake's own. PUT and POST /v1/jobs register through
// RegisterJob (a new version, JobRegistered) with EnforceIndex's refusals
// (500, no X-Nomad-Index, no index taken). The job then read is the job as
// sent, not Nomad's canonical encoding of it: no NodePool "default",
// Status "pending", SubmitTime, default task Identity and the other
// differences jobs.go lists. What F does not show is marked there as
// Nomad's source or as an assumption.
//
// It serves the key set of workload identities (/.well-known/jwks.json)
// and signs identities with it (IssueIdentity, identity.go), in the shape
// recorded from Nomad 2.0.5; identity.go says which answers (a failing key
// set, a rotation) are assumed.
//
// On top of that it injects the faults a client must survive: connections
// cut between frames, inside a frame or between a frame and its newline,
// frozen connections (TCP open, nothing written), refused subscriptions, a
// history reset, and a partition of one caller (by its token) from
// everything it talks to.
package nomadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is how the response body is framed.
type Mode int

const (
	// CloseDelimited is Nomad ≥ 1.11.2: 200 with Connection: close, no
	// length, no chunking; the status is sent before the ACL check, so every
	// error is a bare EOF.
	CloseDelimited Mode = iota
	// Chunked is Nomad ≤ 1.11.1: chunked encoding, a real 403, and errors
	// appended to the stream as plain text without a newline.
	Chunked
)

func (m Mode) String() string {
	if m == Chunked {
		return "chunked"
	}
	return "close-delimited"
}

// Event is one event as Nomad encodes it (field order included).
//
// Its fields are in the order Nomad writes them: alphabetical, as Go's
// encoding of Nomad's event map (recorded in transcripts B1–B3).
type Event struct {
	FilterKeys []string
	Index      uint64
	Key        string
	Namespace  string
	Payload    json.RawMessage
	Topic      string
	Type       string
}

// CutWhere says where a connection is cut, relative to a frame.
type CutWhere int

const (
	NoCut CutWhere = iota
	CutBeforeFrame
	CutMidFrame      // after part of the frame's bytes
	CutBeforeNewline // after the frame, before its newline
)

// Cut is a fault decided for one frame write.
type Cut struct {
	Where CutWhere
	// Frac places a CutMidFrame: the fraction of the frame written first.
	Frac float64
}

// Options configure a Server. Zero values take Nomad's defaults.
type Options struct {
	Mode       Mode
	BufferSize int           // event_buffer_size: indexes kept (default 100)
	Heartbeat  time.Duration // `{}` interval (default 30 s)
	Namespaces []string      // existing namespaces (default ["default"])
	// Authorize decides whether a token may subscribe; nil allows all.
	Authorize func(token string) bool
	// StatusLine replaces "HTTP/1.1 200 OK" (1.11.2 sent "HTTP/0.0 200 OK").
	StatusLine string
	// WriteTimeout closes a connection whose write is blocked this long
	// (default 40 s; negative disables).
	WriteTimeout time.Duration
	// SendBuffer sets SO_SNDBUF on connections (0 leaves the kernel's).
	SendBuffer int
	// Cut, if set, is asked before each frame written to a connection.
	Cut func() Cut
	// CloseWhenDrained closes a subscription once it has sent every buffered
	// frame (for benchmarks: the body then ends). Not Nomad's behaviour.
	CloseWhenDrained bool

	// Variable locks (vars.go). MinLockTTL is the shortest TTL an acquire
	// may ask for (Nomad: 10 s); DefaultLockTTL and DefaultLockDelay are a
	// lock's settings when the acquire gives none and after its holder
	// writes the items (Nomad: 15 s each). Tests lower all three to keep
	// failovers short.
	MinLockTTL       time.Duration
	DefaultLockTTL   time.Duration
	DefaultLockDelay time.Duration
	// ManagementToken, when set, makes variable reads answer as a Nomad
	// with ACLs on: a variable's Lock is shown to this token only, as
	// Nomad 2.0.5 shows it only to a management token and hides it from
	// a workload identity (testdata/nomad-2.0.5/var-lock-read-acl.txt).
	// Empty: shown to every token, as Nomad without ACLs.
	ManagementToken string
}

type storedFrame struct {
	seq    uint64
	index  uint64
	events []Event
	raw    [][]byte // each event encoded
	line   []byte   // the whole frame, every event included
}

// Server is the fake Nomad agent.
type Server struct {
	opts Options
	ln   net.Listener
	srv  *http.Server
	URL  string

	streamBytes atomic.Uint64 // see StreamBytes

	mu          sync.Mutex
	frames      []*storedFrame // ascending index
	nextSeq     uint64
	nextIndex   uint64
	changed     chan struct{} // closed when frames or connections change
	conns       map[*conn]struct{}
	failStatus  int
	closed      bool
	requests    []Request
	vars        map[string]*fakeVar
	varOps      []VarOp
	varIndex    uint64 // the variables table's index: its last write
	lastVarTime int64
	partitioned map[string]bool // tokens cut off by Partition
	// refusedUntil is when the refused subscriptions open now are closed.
	refusedUntil time.Time
	cutoffs      int
	cuts         int
	wg           sync.WaitGroup // Serve
	active       sync.WaitGroup // hijacked connections; Add under mu while !closed

	apiOnce sync.Once
	apiS    *apiState // the job and node API (api.go)
	svcOnce sync.Once
	svcS    *serviceState // the service registrations (services.go)

	idOnce sync.Once
	idS    *idState // the keyring of workload identities (identity.go)
}

// Request records one subscription request.
type Request struct {
	Query url.Values
	Token string
	// BasicAuth is "user:password" when the request carried HTTP basic
	// authentication (NOMAD_HTTP_AUTH, or credentials in NOMAD_ADDR).
	BasicAuth string
}

type conn struct {
	c      net.Conn
	token  string
	frozen bool
	tail   *string // set: end the stream with this text
	wake   chan struct{}
}

// New returns a server listening on 127.0.0.1 on a free port. Start serves it.
func New(opts Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return NewWithListener(ln, opts), nil
}

// NewWithListener returns a server for ln.
func NewWithListener(ln net.Listener, opts Options) *Server {
	if opts.BufferSize <= 0 {
		opts.BufferSize = 100
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 30 * time.Second
	}
	if len(opts.Namespaces) == 0 {
		opts.Namespaces = []string{"default"}
	}
	if opts.StatusLine == "" {
		opts.StatusLine = "HTTP/1.1 200 OK"
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 40 * time.Second
	}
	if opts.MinLockTTL <= 0 {
		opts.MinLockTTL = 10 * time.Second
	}
	if opts.DefaultLockTTL <= 0 {
		opts.DefaultLockTTL = 15 * time.Second
	}
	if opts.DefaultLockDelay <= 0 {
		opts.DefaultLockDelay = 15 * time.Second
	}
	s := &Server{
		opts:        opts,
		ln:          ln,
		URL:         "http://" + ln.Addr().String(),
		nextIndex:   1,
		changed:     make(chan struct{}),
		conns:       map[*conn]struct{}{},
		vars:        map[string]*fakeVar{},
		partitioned: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/event/stream", s.handle)
	s.routeAPI(mux)
	mux.HandleFunc("/v1/var/", s.handleVar)
	s.routeIdentity(mux)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// Start serves in the background until Close.
func (s *Server) Start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = s.srv.Serve(s.ln)
	}()
}

// Close stops the server and ends every connection.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.c.Close()
	}
	s.stopLockTimers()
	s.broadcast()
	s.mu.Unlock()
	_ = s.srv.Close()
	s.wg.Wait()
	s.active.Wait()
}

// broadcast wakes every subscription; s.mu is held.
func (s *Server) broadcast() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Publish appends a frame at the next index and returns that index.
// Events are stamped with it.
func (s *Server) Publish(events ...Event) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.publishLocked(s.nextIndex, events)
}

// PublishAt appends a frame at index, which must be above every index
// published before (raft indexes rise but are not contiguous).
//
// index may repeat the last frame's: Nomad sends one index's events in
// several frames when they come from different sources (a registration's Job
// and Evaluation events at one index, testdata/nomad-2.0.5/split-index.ndjson).
func (s *Server) PublishAt(index uint64, events ...Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sameAsLast := len(s.frames) > 0 && s.frames[len(s.frames)-1].index == index
	if index < s.nextIndex && !sameAsLast {
		panic(fmt.Sprintf("nomadtest: PublishAt(%d) after index %d", index, s.nextIndex-1))
	}
	s.publishLocked(index, events)
}

func (s *Server) publishLocked(index uint64, events []Event) uint64 {
	f := &storedFrame{seq: s.nextSeq, index: index, events: make([]Event, len(events))}
	for i, e := range events {
		e.Index = index
		f.events[i] = e
		f.raw = append(f.raw, encode(e))
	}
	f.line = frameLine(index, f.raw)
	s.nextSeq++
	s.nextIndex = index + 1
	s.frames = append(s.frames, f)
	// Nomad 2.0.5 with event_buffer_size 100 kept the last 101 indexes
	// (transcript B3): the buffer holds one more than its size.
	if n := len(s.frames) - (s.opts.BufferSize + 1); n > 0 {
		clear(s.frames[:n])
		s.frames = s.frames[n:]
	}
	s.broadcast()
	return index
}

// Encode returns an event's JSON as the server writes it.
func Encode(e Event) []byte { return encode(e) }

func encode(e Event) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // Nomad does not escape <, >, &
	if err := enc.Encode(e); err != nil {
		panic(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func frameLine(index uint64, events [][]byte) []byte {
	// Nomad writes Events before Index (transcripts B1–B3).
	b := []byte(`{"Events":[`)
	for i, e := range events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e...)
	}
	return append(append(b, `],"Index":`...), strconv.FormatUint(index, 10)+"}"...)
}

// Reset empties the buffer and restarts the index history at next, as a
// rebuilt cluster or a restarted server would; open connections are closed.
func (s *Server) Reset(next uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.frames = nil
	s.nextIndex = next
	for c := range s.conns {
		c.c.Close()
	}
	s.broadcast()
}

// AddNamespace creates a namespace (seen by subscriptions made after it).
func (s *Server) AddNamespace(ns string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Namespaces = append(s.opts.Namespaces, ns)
}

// SetFailStatus makes new subscriptions and API calls fail with this HTTP
// status (0: serve), answered as failAnswer says.
func (s *Server) SetFailStatus(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failStatus = status
}

// failAnswer is a failing Nomad's answer. A 500 is as recorded
// (transcripts H1, H2): the error as text/plain, no newline, no
// X-Nomad-Index; "No cluster leader" is what a server without a leader
// answers every read (H1), and a client agent whose servers refuse
// connections answers a subscription 500 at once (H2, with the dial error's
// text). Not mirrored: Nomad holds a read for 5 s before answering "No
// cluster leader", and a client agent without a server answers a read not
// at all (H2: nothing in 30 s); the fake answers at once. Another status (a
// proxy's 503) carries its status text (not recorded).
func failAnswer(w http.ResponseWriter, status int) {
	text := http.StatusText(status)
	if status == http.StatusInternalServerError {
		text = "No cluster leader"
	}
	answerText(w, status, "", text)
}

// failing answers as failAnswer and reports true while SetFailStatus is in
// force, for a handler that reads nothing else of s under s.mu first.
func (s *Server) failing(w http.ResponseWriter) bool {
	s.mu.Lock()
	fail := s.failStatus
	s.mu.Unlock()
	if fail == 0 {
		return false
	}
	failAnswer(w, fail)
	return true
}

// FreezeAll makes every open connection stop writing, keeping TCP open.
// New connections are served normally.
func (s *Server) FreezeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.frozen = true
	}
	s.broadcast()
}

// CloseAll ends every open subscription. In chunked mode the stream ends
// with tail (no newline), as Nomad ≤ 1.11.1 does; close-delimited
// connections just close.
func (s *Server) CloseAll(tail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.tail = &tail
	}
	s.broadcast()
}

// DropAll cuts every open connection at once.
func (s *Server) DropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.c.Close()
	}
	s.broadcast()
}

// Requests returns the subscription requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// StreamBytes is how many bytes of the event stream (frames, newlines and
// heartbeats, not the status line) every subscription was written in all.
func (s *Server) StreamBytes() uint64 { return s.streamBytes.Load() }

// Conns is the number of open subscriptions.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Cutoffs counts subscriptions cut off for falling behind the buffer.
func (s *Server) Cutoffs() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cutoffs
}

// Cuts counts connections cut by the Cut option.
func (s *Server) Cuts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cuts
}

// subscription is a parsed request.
type subscription struct {
	topics     map[string][]string
	namespaces map[string]bool
}

func parseTopics(vals []string) (map[string][]string, error) {
	topics := map[string][]string{}
	if len(vals) == 0 {
		topics["*"] = []string{"*"}
		return topics, nil
	}
	for _, v := range vals {
		parts := strings.Split(v, ":")
		switch len(parts) {
		case 1:
			parts = append(parts, "*")
		case 2:
		default:
			//lint:ignore ST1005 Nomad's own error text, as its clients see it
			return nil, fmt.Errorf("Invalid key value pair for topic, topic: %s", v)
		}
		topics[parts[0]] = append(topics[parts[0]], parts[1])
	}
	// Quirk: mixing a wildcard key with named keys loses the wildcard.
	for t, keys := range topics {
		if len(keys) > 1 && slices.Contains(keys, "*") {
			topics[t] = slices.DeleteFunc(keys, func(k string) bool { return k == "*" })
		}
	}
	return topics, nil
}

// filter returns the events of f a subscription receives, each once per
// subscribed key it matches (Nomad's other quirk).
func (sub *subscription) filter(f *storedFrame) [][]byte {
	var out [][]byte
	for i, e := range f.events {
		if e.Namespace != "" && !sub.namespaces[e.Namespace] {
			continue
		}
		keys, ok := sub.topics[e.Topic]
		if !ok {
			keys = sub.topics["*"]
		}
		for _, k := range keys {
			if k == "*" || k == e.Key || slices.Contains(e.FilterKeys, k) {
				out = append(out, f.raw[i])
			}
		}
	}
	return out
}

func (s *Server) handle(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "Invalid method", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	token := requestToken(r)
	if !s.waitPartition(r, token) {
		return
	}
	s.mu.Lock()
	req := Request{Query: q, Token: token}
	if user, pass, ok := r.BasicAuth(); ok {
		req.BasicAuth = user + ":" + pass
	}
	s.requests = append(s.requests, req)
	fail := s.failStatus
	s.mu.Unlock()
	if fail != 0 {
		failAnswer(w, fail)
		return
	}
	var index uint64
	if v := q.Get("index"); v != "" {
		// B5: Nomad parses with strconv.Atoi and answers its error as text
		// (no newline, a plain answer with its Content-Length). A negative
		// index is refused too (not recorded).
		n, err := strconv.Atoi(v)
		if err == nil && n < 0 {
			_, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			answerText(w, http.StatusBadRequest, "", "Unable to parse index: "+err.Error())
			return
		}
		index = uint64(n)
	}
	topics, err := parseTopics(q["topic"])
	if err != nil {
		answerText(w, http.StatusBadRequest, "", "Invalid topic query: error parsing topics: "+err.Error()) // B5
		return
	}
	ns := q.Get("namespace")
	if ns == "" {
		ns = "default"
	}
	authorized := s.opts.Authorize == nil || s.opts.Authorize(token)
	if !authorized && s.opts.Mode == Chunked {
		http.Error(w, "Permission denied", http.StatusForbidden)
		return
	}

	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "no hijacking", http.StatusInternalServerError)
		return
	}
	nc, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer nc.Close()
	if tc, ok := nc.(*net.TCPConn); ok && s.opts.SendBuffer > 0 {
		_ = tc.SetWriteBuffer(s.opts.SendBuffer)
	}
	c := &conn{c: nc, token: token, wake: make(chan struct{}, 1)}
	hdr := s.opts.StatusLine + "\r\nContent-Type: application/json\r\n"
	if s.opts.Mode == Chunked {
		hdr += "Transfer-Encoding: chunked\r\n"
	} else {
		hdr += "Connection: close\r\nCache-Control: no-cache\r\n" // B1..B5
	}
	hdr += "Date: " + time.Now().UTC().Format(http.TimeFormat) + "\r\n\r\n"
	if _, err := brw.WriteString(hdr); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	if !authorized {
		// E: Nomad's 200 goes out before its ACL check, then not one byte,
		// not even `{}`, until it closes the connection about 30 s later
		// (its heartbeat interval: every refused stream of the recording
		// closed at the same moment, 28.5 to 30.6 s after each was opened:
		// the first refused stream sets the moment, Heartbeat later, and
		// those that come before it close with it).
		s.mu.Lock()
		changed, closed := s.changed, s.closed
		if now := time.Now(); !s.refusedUntil.After(now) {
			s.refusedUntil = now.Add(s.opts.Heartbeat)
		}
		until := s.refusedUntil
		s.mu.Unlock()
		if closed {
			return
		}
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		for {
			select {
			case <-t.C:
				return
			case <-changed:
				s.mu.Lock()
				changed, closed = s.changed, s.closed
				s.mu.Unlock()
				if closed {
					return
				}
			}
		}
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	sub := &subscription{topics: topics, namespaces: map[string]bool{}}
	if ns == "*" {
		for _, n := range s.opts.Namespaces {
			sub.namespaces[n] = true
		}
	} else {
		sub.namespaces[ns] = true
	}
	next := s.startSeq(index)
	s.conns[c] = struct{}{}
	s.active.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.active.Done()
	}()
	s.stream(c, brw.Writer, sub, next)
}

// requestToken is the request's token: X-Nomad-Token, else a bearer token.
func requestToken(r *http.Request) string {
	if t := r.Header.Get("X-Nomad-Token"); t != "" {
		return t
	}
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
}

// startSeq applies the index rules; s.mu is held.
func (s *Server) startSeq(index uint64) uint64 {
	if len(s.frames) == 0 {
		return s.nextSeq
	}
	if index == 0 || index <= s.frames[0].index {
		return s.frames[0].seq // index 0 replays all; older than the buffer: the oldest
	}
	for _, f := range s.frames {
		if f.index >= index {
			return f.seq // at index, or the next one above it
		}
	}
	return s.frames[len(s.frames)-1].seq // newer than everything: the newest, below index
}

// writer frames body bytes for one connection.
type writer struct {
	s    *Server
	c    net.Conn
	bw   *bufio.Writer
	mode Mode
}

func (w *writer) write(b []byte) error {
	w.s.streamBytes.Add(uint64(len(b)))
	if w.s.opts.WriteTimeout > 0 {
		_ = w.c.SetWriteDeadline(time.Now().Add(w.s.opts.WriteTimeout))
	}
	if w.mode == Chunked {
		fmt.Fprintf(w.bw, "%x\r\n", len(b))
		w.bw.Write(b)
		w.bw.WriteString("\r\n")
	} else {
		w.bw.Write(b)
	}
	return w.bw.Flush()
}

func (w *writer) end(tail string) {
	if w.mode != Chunked {
		return
	}
	if tail != "" {
		_ = w.write([]byte(tail))
	}
	w.bw.WriteString("0\r\n\r\n")
	_ = w.bw.Flush()
}

var heartbeat = []byte("{}\n")

// stream serves one subscription from sequence number next.
func (s *Server) stream(c *conn, bw *bufio.Writer, sub *subscription, next uint64) {
	w := &writer{s: s, c: c.c, bw: bw, mode: s.opts.Mode}
	if w.write(heartbeat) != nil {
		return
	}
	tick := time.NewTicker(s.opts.Heartbeat)
	defer tick.Stop()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		if c.frozen || s.partitioned[c.token] {
			changed := s.changed
			s.mu.Unlock()
			<-changed // until healed, or the server closes (the connection is closed then)
			continue
		}
		if c.tail != nil {
			tail := *c.tail
			s.mu.Unlock()
			w.end(tail)
			return
		}
		var f *storedFrame
		if len(s.frames) > 0 {
			if next < s.frames[0].seq {
				s.cutoffs++
				s.mu.Unlock()
				w.end("event dropped from buffer")
				return
			}
			if k := next - s.frames[0].seq; k < uint64(len(s.frames)) {
				f = s.frames[k]
			}
		} else if next < s.nextSeq {
			next = s.nextSeq // the buffer was reset
		}
		changed := s.changed
		drained := f == nil && s.opts.CloseWhenDrained
		s.mu.Unlock()

		if drained {
			w.end("")
			return
		}
		if f == nil {
			select {
			case <-changed:
			case <-tick.C:
				if w.write(heartbeat) != nil {
					return
				}
			}
			continue
		}
		next = f.seq + 1
		events := sub.filter(f)
		if len(events) == 0 {
			continue
		}
		line := f.line
		if len(events) != len(f.raw) {
			line = frameLine(f.index, events)
		}
		if !s.writeFrame(w, line) {
			return
		}
		select {
		case <-tick.C:
			if w.write(heartbeat) != nil {
				return
			}
		default:
		}
	}
}

// writeFrame writes a frame and, separately, its newline, applying any cut.
func (s *Server) writeFrame(w *writer, line []byte) bool {
	cut := Cut{}
	if s.opts.Cut != nil {
		cut = s.opts.Cut()
	}
	if cut.Where != NoCut {
		s.mu.Lock()
		s.cuts++
		s.mu.Unlock()
	}
	switch cut.Where {
	case CutBeforeFrame:
		return false
	case CutMidFrame:
		n := int(cut.Frac * float64(len(line)))
		n = max(1, min(n, len(line)-1))
		_ = w.write(line[:n])
		return false
	}
	if w.write(line) != nil {
		return false
	}
	if cut.Where == CutBeforeNewline {
		return false
	}
	return w.write([]byte("\n")) == nil
}
