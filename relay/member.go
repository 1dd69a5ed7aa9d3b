package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/halock"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// The lock's items: where the holder serves, and its node.
const (
	ItemAddress = "address"
	ItemNode    = "node"
)

// DefaultUpstreamGrace is how long the holder keeps serving its
// subscribers while its own stream from Nomad is down: a reconnect that
// resumes within it is invisible to them; past it they are cut off and
// refused, so that they say so or follow Nomad themselves.
const DefaultUpstreamGrace = 10 * time.Second

// Member is one agent's part of the relay: it contends for the lock; while
// it holds it, it follows Nomad's Job topic (every namespace) into a fresh
// History and serves it (ServeHTTP); it always knows the holder the lock
// names (Holder), which is what its own discovery follows.
type Member struct {
	Nomad *nomad.Client
	Lock  *nomad.VarLock
	// Address is where this agent serves (host:port), written in the lock
	// for the others; Node is its Nomad node, for the operators.
	Address, Node  string
	TTL, LockDelay time.Duration
	History        HistoryOptions
	// Authorize, MaxSubscribers: the Server's.
	Authorize      func(*http.Request) error
	MaxSubscribers int
	// Start is the index the holder's stream starts at when it takes
	// over: the index its own discovery applied (inclusive: Nomad sends
	// the frame at it again, so that subscribers at it resume exactly).
	Start func() uint64
	// UpstreamGrace: see DefaultUpstreamGrace.
	UpstreamGrace time.Duration
	Log           *slog.Logger
	// Stats counts the holder's stream from Nomad.
	Stats *nomad.Stats

	mu      sync.Mutex
	holder  string // the address the lock names; "" unknown
	self    bool   // this agent holds the lock
	changed chan struct{}
	server  *Server // while holding
	hist    *History
	upErr   error // why the upstream is not served from; nil while it is
}

func (m *Member) log() *slog.Logger {
	if m.Log != nil {
		return m.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Holder returns the address the lock names ("" while none is known),
// whether it is this agent, and a channel closed when that changes.
func (m *Member) Holder() (addr string, self bool, changed <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	return m.holder, m.self, m.changed
}

func (m *Member) setHolder(addr string, self bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.changed == nil {
		m.changed = make(chan struct{})
	}
	if addr == m.holder && self == m.self {
		return
	}
	m.holder, m.self = addr, self
	close(m.changed)
	m.changed = make(chan struct{})
}

// ServeHTTP serves the relay while this agent holds the lock; otherwise
// 503, naming the holder.
func (m *Member) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	srv, holder, upErr := m.server, m.holder, m.upErr
	m.mu.Unlock()
	switch {
	case srv == nil && holder != "":
		http.Error(w, "relay: this agent is not the relay; the lock names "+holder, http.StatusServiceUnavailable)
	case srv == nil:
		http.Error(w, "relay: this agent is not the relay, and no holder is known", http.StatusServiceUnavailable)
	case upErr != nil:
		http.Error(w, "relay: its stream from Nomad is down: "+upErr.Error(), http.StatusServiceUnavailable)
	default:
		srv.ServeHTTP(w, r)
	}
}

// Run contends for the lock until ctx ends, holding and serving each time
// it gets it. A lock Nomad refuses as a bad request ends it with that
// error.
func (m *Member) Run(ctx context.Context) error {
	log := m.log().With("lock", m.Lock.Path())
	var failing bool
	c := &halock.Contender{
		Lock: m.Lock, TTL: m.TTL, LockDelay: m.LockDelay, Log: log,
		Items: func(map[string]string) map[string]string {
			return map[string]string{ItemAddress: m.Address, ItemNode: m.Node}
		},
		Held: func(v nomad.Variable) {
			addr := v.Items[ItemAddress]
			if h, _, _ := m.Holder(); h != addr {
				log.Info("relay: the lock names a holder", "holder", addr, "node", v.Items[ItemNode])
			}
			m.setHolder(addr, false)
		},
		Failed: func(err error, refused bool, attempt int, delay time.Duration) {
			level := slog.LevelDebug
			if !failing {
				level = slog.LevelWarn
			}
			failing = true
			log.Log(ctx, level, "relay: the lock's requests fail; retrying", "error", err.Error(), "refused", refused, "attempt", attempt, "retry_in", delay.Round(time.Millisecond).String())
		},
		Working: func() {
			failing = false
			log.Info("relay: the lock's requests work again")
		},
	}
	for ctx.Err() == nil {
		ls, err := c.Acquire(ctx)
		if err != nil {
			return err
		}
		if ls == nil {
			return nil
		}
		m.hold(ctx, ls, log)
	}
	return nil
}

// hold serves while ls holds, then lets the lock go (unless it was lost).
func (m *Member) hold(ctx context.Context, ls *halock.Lease, log *slog.Logger) {
	start := uint64(0)
	if m.Start != nil {
		start = m.Start()
	}
	h := NewHistory(m.History)
	srv := &Server{History: h, Namespace: "*", Authorize: m.Authorize, MaxSubscribers: m.MaxSubscribers}
	m.mu.Lock()
	m.server, m.hist, m.upErr = srv, h, errors.New("not subscribed yet")
	m.mu.Unlock()
	m.setHolder(m.Address, true)
	log.Info("relay: this agent holds the lock: following Nomad's Job events for the others", "address", m.Address, "index", start)

	hctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { ls.Keep(hctx); cancel() })
	up := &upstream{m: m, h: h, grace: m.UpstreamGrace}
	if up.grace <= 0 {
		up.grace = DefaultUpstreamGrace
	}
	st := nomad.NewStreamer(m.Nomad, nomad.Config{
		Subscription: nomad.Subscription{Topics: []string{"Job"}, Namespace: "*"},
		Logger:       log, HeartbeatTimeout: 90 * time.Second, Stats: m.Stats,
	})
	wg.Go(func() { _ = st.Run(hctx, up, nomad.Position{Index: start}); cancel() })
	wg.Wait()
	up.stop()

	m.mu.Lock()
	m.server, m.hist = nil, nil
	m.mu.Unlock()
	m.setHolder("", false)
	h.Cut(ErrNotHolder) // every subscriber goes to find the new holder
	if err := ls.Held(); err != nil {
		log.Error("relay: lost the lock: stopped serving", "reason", err.Error())
		return
	}
	rctx, rcancel := context.WithTimeout(context.Background(), m.Lock.CallTimeout)
	defer rcancel()
	if err := m.Lock.Release(rctx, ls.ID()); err != nil {
		log.Warn("relay: the lock was not released: another agent takes over once it lapses", "error", err.Error())
		return
	}
	log.Info("relay: lock released")
}

// ErrNotHolder cuts off the subscribers when this agent stops being the
// relay.
var ErrNotHolder = errors.New("relay: this agent stopped being the relay")

// upstream is the holder's Handler for its stream from Nomad: a Feed that
// also tells the Member whether the stream is up, with a grace.
type upstream struct {
	m     *Member
	h     *History
	grace time.Duration

	mu    sync.Mutex
	timer *time.Timer
}

func (u *upstream) Frame(f nomad.Frame) error                 { return Feed{u.h}.Frame(f) }
func (u *upstream) Discontinuity(d nomad.Discontinuity) error { return Feed{u.h}.Discontinuity(d) }
func (u *upstream) Event(nomad.Event) error                   { return nil }
func (u *upstream) Idle(nomad.Position) error                 { return nil }

func (u *upstream) Up() {
	u.mu.Lock()
	if u.timer != nil {
		u.timer.Stop()
		u.timer = nil
	}
	u.mu.Unlock()
	u.m.mu.Lock()
	u.m.upErr = nil
	u.m.mu.Unlock()
}

// Down keeps serving for the grace, then cuts the subscribers off and
// refuses new ones until the stream is up again.
func (u *upstream) Down(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.timer != nil {
		return
	}
	u.timer = time.AfterFunc(u.grace, func() {
		u.m.mu.Lock()
		u.m.upErr = fmt.Errorf("down for more than %s: %w", u.grace, err)
		u.m.mu.Unlock()
		u.h.Cut(ErrUpstreamDown)
	})
}

func (u *upstream) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.timer != nil {
		u.timer.Stop()
	}
}

// ErrUpstreamDown cuts off the subscribers when the holder's own stream
// from Nomad has been down for longer than its grace.
var ErrUpstreamDown = errors.New("relay: its stream from Nomad is down")
