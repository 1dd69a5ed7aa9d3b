package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/relay"
)

// The relay (the nomad block's relay block): every agent contends for a
// Nomad variable lock; the holder follows Nomad's Job events and serves
// them (relay.Member), and every agent's discovery, the holder's own
// included, follows the address the lock names instead of Nomad. While no
// relay answers for longer than fallback_after, discovery follows Nomad
// directly, and goes back to the relay once one answers.

// Relay is the handler of GET /v1/event/stream on the agent's listener:
// the relay's subscriptions while this agent holds the lock, 503 naming
// the holder otherwise, and 404 while the relay is off.
func (d *Discoverer) Relay() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m := d.member.Load()
		if m == nil {
			http.Error(w, "relay: off on this agent (nomad relay block not set)", http.StatusNotFound)
			return
		}
		m.ServeHTTP(w, r)
	})
}

// errSwitch ends a stream to follow it from another source.
var errSwitch = errors.New("switching the Job stream's source")

// errNoRelay ends a relayed stream that did not come up in time.
var errNoRelay = errors.New("no relay answers")

// probeTimeout bounds one check that a relay answers.
const probeTimeout = 5 * time.Second

// relayLink is discovery's side of the relay: which source it follows.
type relayLink struct {
	m        *relay.Member
	fallback time.Duration
	token    func() (string, error)
	st       *state
	pub      *publisher
	log      *slog.Logger

	direct bool // following Nomad directly: no relay answered in time
}

// identityFile is a block's identity_file (file), or where Nomad writes a
// task's identity named "relay": the agents' one identity for one another,
// which the relay and the peers blocks share; block names the block in the
// error.
func identityFile(block, file string) (string, error) {
	if file != "" {
		return file, nil
	}
	dir := os.Getenv("NOMAD_SECRETS_DIR")
	if dir == "" {
		return "", errors.New(block + ": identity_file is not set and NOMAD_SECRETS_DIR is not either (outside a Nomad task, name the file holding the agents' identity)")
	}
	return filepath.Join(dir, "nomad_relay.jwt"), nil
}

// startRelay starts the relay member when settings turn it on; nil, nil
// when they do not.
func (d *Discoverer) startRelay(ctx context.Context, bg *sync.WaitGroup, settings config.Nomad, client *nomad.Client, st *state, pub *publisher, log *slog.Logger) (*relayLink, error) {
	r := settings.Relay
	if r == nil {
		return nil, nil
	}
	addr := r.Advertise
	if addr == "" {
		addr = d.Advertise
	}
	if addr == "" {
		return nil, errors.New("nomad relay: no address to advertise: set advertise, or -listen to this node's address")
	}
	file, err := identityFile("nomad relay", r.IdentityFile)
	if err != nil {
		return nil, err
	}
	lock, err := client.VarLock(r.LockPath, r.Namespace)
	if err != nil {
		return nil, fmt.Errorf("nomad relay: lock_path: %w", err)
	}
	token := nomad.TokenFromEnvOrFile(file)
	authorize := relayAuthorizer(client, r, token, log)
	m := &relay.Member{
		Nomad: client, Lock: lock, Address: addr, Node: settings.NodeID,
		TTL: r.LockTTL, LockDelay: r.LockTTL,
		History:   relay.HistoryOptions{MaxBytes: r.HistoryBytes},
		Authorize: authorize, MaxSubscribers: r.MaxSubscribers, Log: log,
		Start: func() (index uint64) {
			pub.with(func() { index = st.index })
			return index
		},
	}
	d.member.Store(m)
	bg.Go(func() {
		defer d.member.CompareAndSwap(m, nil)
		if err := m.Run(ctx); err != nil {
			log.Error("relay: stopped contending for the lock", "error", err.Error())
		}
	})
	rl := &relayLink{m: m, fallback: r.FallbackAfter, token: token, st: st, pub: pub, log: log}
	rl.report(agent.SourceNone, "", false)
	return rl, nil
}

// report records the source followed, for the status and the metrics.
func (rl *relayLink) report(source, holder string, self bool) {
	rl.pub.with(func() { rl.st.relay = &agent.RelayStatus{Source: source, Holder: holder, Self: self} })
	rl.pub.soon(rl.st)
}

// client is a Nomad API client for the relay at addr, presenting this
// agent's relay identity.
func (rl *relayLink) client(addr string) (*nomad.Client, error) {
	return nomad.NewClient(&api.Config{Address: "http://" + addr}, rl.token)
}

// follow follows the Job events into f from start, from the relay the
// lock names or, while none answers, from Nomad (c), switching as that
// changes and resuming exactly where the last source ended.
func (rl *relayLink) follow(ctx context.Context, c *nomad.Client, f *follower, start nomad.Position) error {
	for ctx.Err() == nil {
		pos := start
		if f.pos.Written {
			pos = f.pos
		}
		addr, self, changed := rl.m.Holder()
		var err error
		switch {
		case rl.direct:
			rl.report(agent.SourceNomad, addr, self)
			err = rl.followNomad(ctx, c, f, pos)
		case addr == "":
			rl.report(agent.SourceNone, "", false)
			select {
			case <-changed:
				continue
			case <-time.After(rl.fallbackWait()):
				rl.fallBack("no relay is known")
				continue
			case <-ctx.Done():
				return nil
			}
		default:
			err = rl.followRelay(ctx, addr, self, changed, f, pos)
		}
		if !errors.Is(err, errSwitch) {
			return err
		}
	}
	return nil
}

// fallbackWait is how long to wait for a relay before following Nomad:
// fallback_after and up to a quarter more, drawn each time, so that the
// agents that lost a relay together do not all subscribe to Nomad in the
// same instant.
func (rl *relayLink) fallbackWait() time.Duration {
	return rl.fallback + rand.N(rl.fallback/4+1)
}

func (rl *relayLink) fallBack(why string) {
	rl.direct = true
	rl.log.Warn("discovery: "+why+" for fallback_after ("+rl.fallback.String()+" or a little more): following Nomad directly until a relay answers", "fallback_after", rl.fallback.String())
}

// followRelay follows the relay at addr until the lock names another, the
// relay does not come up within fallback_after (then Nomad is followed
// directly), ctx ends or f stops it.
func (rl *relayLink) followRelay(ctx context.Context, addr string, self bool, changed <-chan struct{}, f *follower, pos nomad.Position) error {
	client, err := rl.client(addr)
	if err != nil {
		return fmt.Errorf("relay %s: %w", addr, err)
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	w := &watched{Handler: f}
	watchdog := time.AfterFunc(rl.fallbackWait(), func() { cancel(errNoRelay) })
	defer watchdog.Stop()
	w.up = func() {
		watchdog.Stop()
		rl.report(agent.SourceRelay, addr, self)
	}
	w.down = func() { watchdog.Reset(rl.fallbackWait()) }
	go func() {
		select {
		case <-changed:
			cancel(errSwitch)
		case <-sctx.Done():
		}
	}()
	err = followFrom(sctx, client, w, pos, rl.log.With("relay", addr))
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return err
	case errors.Is(context.Cause(sctx), errNoRelay):
		rl.fallBack("the relay " + addr + " does not answer")
	}
	return errSwitch
}

// followNomad follows Nomad directly until a relay answers a probe (at
// each change of holder, and every fallback_after), ctx ends or f stops
// it.
func (rl *relayLink) followNomad(ctx context.Context, c *nomad.Client, f *follower, pos nomad.Position) error {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	probed := make(chan struct{})
	go func() {
		defer close(probed)
		t := time.NewTicker(rl.fallback)
		defer t.Stop()
		for {
			addr, _, changed := rl.m.Holder()
			if addr != "" && rl.probe(sctx, addr) {
				cancel(errSwitch)
				return
			}
			select {
			case <-changed:
			case <-t.C:
			case <-sctx.Done():
				return
			}
		}
	}()
	err := followFrom(sctx, c, f, pos, rl.log)
	cancel(nil)
	<-probed
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return err
	}
	rl.direct = false
	rl.log.Info("discovery: a relay answers again: following it rather than Nomad")
	return errSwitch
}

// probe says whether the relay at addr accepts a subscription (its first
// heartbeat comes within probeTimeout).
func (rl *relayLink) probe(ctx context.Context, addr string) bool {
	client, err := rl.client(addr)
	if err != nil {
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	h := &watched{Handler: nopHandler{}}
	var up bool
	h.up = func() { up = true; cancel() }
	st := nomad.NewStreamer(client, nomad.Config{Subscription: nomad.Subscription{Topics: []string{"Job"}, Namespace: "*"}})
	_ = st.Run(pctx, h, nomad.Position{Index: nomad.Newest})
	return up
}

// watched passes a stream to Handler and tells up and down.
type watched struct {
	nomad.Handler
	up, down func()
	isUp     bool
}

func (w *watched) Up() {
	w.isUp = true
	if w.up != nil {
		w.up()
	}
	w.Handler.Up()
}

func (w *watched) Down(err error) {
	if w.isUp && w.down != nil {
		w.down()
	}
	w.isUp = false
	w.Handler.Down(err)
}

type nopHandler struct{}

func (nopHandler) Event(nomad.Event) error                 { return nil }
func (nopHandler) Idle(nomad.Position) error               { return nil }
func (nopHandler) Discontinuity(nomad.Discontinuity) error { return nil }
func (nopHandler) Up()                                     {}
func (nopHandler) Down(error)                              {}
