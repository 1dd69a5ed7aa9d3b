// Package discovery finds the images a node needs from Nomad itself, so
// that no list has to be kept by hand: it learns its own node (the Nomad
// client agent it talks to), lists every job of the namespaces it follows,
// and then follows the Job event stream with the exact-resume reader of the
// nomad package, keeping the images of every docker task of every job that
// can be placed on this node (datacenters, node pool, constraints and host volumes, as
// Nomad's scheduler decides them; what it can't decide is skipped unless
// include_undecided). Images are interpolated from the node and the job's
// meta, and mapped to sources by the nomad block's rewrites.
//
// Any job submitter can make nodes keep images, so what they can make a
// node keep is bounded: only images under allowed_prefixes when it is set,
// and at most max_images of them, the oldest jobs' first (by CreateIndex,
// which Nomad assigns and a re-registration keeps), with what is left out
// listed in the status.
//
// It implements agent.Discoverer and reports agent.Discovered sets; losing
// Nomad never drops images (the last known set stays), and a gap in the
// stream makes it list every job again. It imports agent (for the set it
// reports), config and nomad, and cluster for the peers' catalog (peers.go),
// and must not be imported by them.
package discovery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/peer"
	"github.com/nomad-prefetch/nomad-prefetch/relay"
)

// Discoverer follows Nomad's jobs; its zero value is ready to use.
type Discoverer struct {
	Log *slog.Logger
	// CallTimeout bounds each Nomad API call (default 30 s).
	CallTimeout time.Duration
	// Coalesce is the shortest time between two sets reported (default
	// 100 ms): a burst of job updates is one reload of the loop.
	Coalesce time.Duration
	// Retry is the backoff between failed attempts to list the jobs.
	Retry backoff.Policy
	// Advertise is the address this agent's listener serves at (host:port),
	// which the relay block's advertise defaults to.
	Advertise string
	// Engine, Held and PeerBytes serve the peers block: the Docker Engine
	// that saves the images served and loads the ones taken, what the
	// agent holds for an expected reference (its snapshot), and a counter
	// of the bytes "served" to and "taken" from peers (optional).
	Engine    PeerEngine
	Held      func(ref string) peer.Held
	PeerBytes func(direction string, n int64)
	// PeerServe, when set, is told what the peer server did
	// (peer.Server.Count's events).
	PeerServe func(event string)
	// StallTimeout is the config in force's stall_timeout, read at each
	// peer transfer (nil, or 0: 2 min): it ends one served, and one taken
	// when the fetch does not pass its own.
	StallTimeout func() time.Duration

	member atomic.Pointer[relay.Member] // the relay's, while Run has one
	peers  atomic.Pointer[peerLink]     // the peers', while Run has them
}

// PeerEngine is what the peers need of the Docker Engine: save the images
// served, load and inspect the ones taken. *registry.Engine implements it.
type PeerEngine interface {
	peer.Engine
	bundle.Engine
}

var _ agent.Discoverer = (*Discoverer)(nil)

// errRelist stops a stream after a discontinuity: every job is listed again.
var errRelist = errors.New("the Job event stream has a gap: listing every job again")

// Run follows Nomad with settings until ctx is done (see agent.Discoverer).
func (d *Discoverer) Run(ctx context.Context, settings config.Nomad, found func(agent.Discovered)) {
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("nomad", settings.Address)
	retry := d.retry()
	st := newState(settings, log)
	pub := &publisher{found: found, every: cmpOr(d.Coalesce, 100*time.Millisecond)}
	defer pub.stop()
	client, err := NewClient(settings)
	if err != nil {
		pub.with(func() { st.failed(err, time.Now()) })
		pub.now(st)
		log.Error("discovery: can't talk to Nomad", "error", err.Error())
		<-ctx.Done()
		return
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Go(func() { d.followStaged(ctx, client, st, pub, log) })
	bg.Go(func() { watchExpiry(ctx, st, pub) })
	self := func() (id string) {
		pub.with(func() {
			if st.known {
				id = st.node.id
			}
		})
		return cmp.Or(id, settings.NodeID)
	}
	if stopPeers, err := d.startPeers(settings, client, self, log); err != nil {
		pub.with(func() { st.failed(err, time.Now()) })
		pub.now(st)
		log.Error("discovery: the peers can't be set up; no image is taken from or served to them", "error", err.Error())
	} else {
		defer stopPeers()
	}
	rl, err := d.startRelay(ctx, &bg, settings, client, st, pub, log)
	if err != nil {
		pub.with(func() { st.failed(err, time.Now()) })
		pub.now(st)
		log.Error("discovery: the relay can't be set up; following Nomad directly", "error", err.Error())
	}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := d.session(ctx, client, st, pub, rl, log)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRelist) {
			log.Warn("discovery: " + err.Error())
			attempt = 0
			continue
		}
		pub.with(func() { st.failed(err, time.Now()) })
		pub.now(st)
		if attempt == 1 {
			log.Error("discovery: Nomad can't be followed; the last known images are kept", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry.Delay(attempt, rand.Float64())):
		}
	}
}

// retry is d.Retry, or its default.
func (d *Discoverer) retry() backoff.Policy {
	if d.Retry == (backoff.Policy{}) {
		return backoff.Policy{Min: time.Second, Max: time.Minute, Jitter: 0.2}
	}
	return d.Retry
}

func cmpOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// failed records that Nomad could not be followed.
func (st *state) failed(err error, now time.Time) {
	if st.err == "" {
		st.errorSince = now
	}
	st.err, st.live = err.Error(), false
}

// session learns the node, lists every job, then follows the Job events
// until the stream fails for good, ctx ends, or a gap needs a new list.
func (d *Discoverer) session(ctx context.Context, c *nomad.Client, st *state, pub *publisher, rl *relayLink, log *slog.Logger) error {
	timeout := cmpOr(d.CallTimeout, 30*time.Second)
	n, err := learnNode(ctx, c, timeout, st.nodeID)
	if err != nil {
		return err
	}
	if !st.known || st.node.name != n.name {
		log.Info("discovery: following Nomad's jobs for this node", "node", n.name, "datacenter", n.datacenter, "pool", n.pool, "class", n.class)
	}
	// Each job is reduced to its images here as soon as it is read, so
	// that a cluster's jobs are never all held decoded at once.
	images := func(job *api.Job) jobImages { return st.rules.imagesOf(job, n) }
	jobs, index, err := listJobs(ctx, c, st.namespaceWanted, images, timeout)
	if err != nil {
		return err
	}
	pub.with(func() {
		st.node, st.known = n, true
		st.relist(jobs)
		st.index, st.listed, st.err, st.live = index, true, "", true
	})
	pub.now(st)
	log.Info("discovery: jobs listed", "jobs", len(jobs), "with_images_here", len(st.jobs), "index", index)

	f := &follower{st: st, pub: pub}
	start := nomad.Position{Index: index}
	if rl == nil {
		err = followFrom(ctx, c, f, start, log)
	} else {
		err = rl.follow(ctx, c, f, start)
	}
	if errors.Is(err, errRelist) {
		return errRelist
	}
	if err == nil && ctx.Err() == nil {
		err = errors.New("the Job event stream ended")
	}
	return err
}

// followFrom follows the Job events of every namespace from client (Nomad,
// or a relay) into f, from pos, until ctx ends or f stops it.
func followFrom(ctx context.Context, client *nomad.Client, f nomad.Handler, pos nomad.Position, log *slog.Logger) error {
	streamer := nomad.NewStreamer(client, nomad.Config{
		Subscription: nomad.Subscription{Topics: []string{"Job"}, Namespace: "*"},
		Logger:       log, HeartbeatTimeout: 90 * time.Second,
	})
	return streamer.Run(ctx, f, pos)
}

// learnNode reads the node's facts: node id's, else those of the node of
// the agent c talks to.
func learnNode(ctx context.Context, c *nomad.Client, timeout time.Duration, id string) (node, error) {
	if id == "" {
		var err error
		if id, err = AgentNode(ctx, c, timeout); err != nil {
			return node{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	n, _, err := c.API().Nodes().Info(url.PathEscape(id), nomad.Query(ctx, nil))
	if err != nil {
		return node{}, fmt.Errorf("reading this node (%s): %w", id, nomad.Err(err))
	}
	return newNode(n), nil
}

// AgentNode asks the agent c talks to which node it is.
func AgentNode(ctx context.Context, c *nomad.Client, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Agent().Self takes no options, so no deadline: the same call through
	// Raw, which does.
	var self api.AgentSelf
	if _, err := c.API().Raw().Query("/v1/agent/self", &self, nomad.Query(ctx, nil)); err != nil {
		return "", fmt.Errorf("asking the Nomad agent which node it is (or set node_id): %w", nomad.Err(err))
	}
	id := self.Stats["client"]["node_id"]
	if id == "" {
		return "", fmt.Errorf("the Nomad agent at %s is not a client (its /v1/agent/self has no node ID): discovery needs this node's own agent (NOMAD_ADDR, or the task API socket), or node_id", c.Address())
	}
	return id, nil
}

// listJobs reads every job that is not stopped of the namespaces wanted, at
// most 8 at a time, and returns what images makes of each, by job key, with
// the index of the list.
func listJobs(ctx context.Context, c *nomad.Client, wanted func(ns string) bool, images func(*api.Job) jobImages, timeout time.Duration) (map[string]jobImages, uint64, error) {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	stubs, meta, err := c.API().Jobs().List(nomad.Query(lctx, &api.QueryOptions{Namespace: "*"}))
	cancel()
	if err != nil {
		return nil, 0, fmt.Errorf("listing jobs: %w", nomad.Err(err))
	}
	index := meta.LastIndex
	jobs := make([]jobImages, len(stubs))
	found := make([]bool, len(stubs))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	errs := make([]error, len(stubs))
	for i, s := range stubs {
		if s.Stop || !wanted(s.Namespace) {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			jctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			job, _, err := c.API().Jobs().Info(s.ID, nomad.Query(jctx, &api.QueryOptions{Namespace: s.Namespace}))
			if err != nil {
				errs[i] = fmt.Errorf("reading job %s/%s: %w", s.Namespace, s.ID, nomad.Err(err))
				return
			}
			jobs[i], found[i] = images(job), true
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	out := make(map[string]jobImages, len(stubs))
	for i, s := range stubs {
		if found[i] {
			out[jobKey(s.Namespace, s.ID)] = jobs[i]
		}
	}
	return out, index, nil
}

// event is the part of a Job event discovery reads.
type event struct {
	Topic     string
	Type      string
	Key       string
	Namespace string
	Payload   struct {
		Job     *api.Job
		Deleted bool
	}
}

// follower is the Streamer's Handler: it applies Job registrations and
// deregistrations as they come, publishes once the stream goes quiet,
// reports the stream going down and back up, and stops the stream
// (errRelist) at a gap, a rebuilt history or a skipped frame, after which
// only a new list is exact.
type follower struct {
	st    *state
	pub   *publisher
	dirty bool           // events applied since the last publish
	pos   nomad.Position // where the frames handed over end: a resume from another source starts there
}

func (f *follower) Event(e nomad.Event) error {
	var ev event
	if e.Topic != "Job" || json.Unmarshal(e.Raw, &ev) != nil {
		return nil
	}
	f.pub.with(func() {
		switch ev.Type {
		case "JobRegistered":
			if ev.Payload.Job != nil {
				f.st.upsert(ev.Payload.Job)
			}
		case "JobDeregistered":
			if ev.Payload.Job == nil || ev.Payload.Deleted || deref(ev.Payload.Job.Stop) {
				f.st.remove(ev.Namespace, ev.Key)
			} else {
				f.st.upsert(ev.Payload.Job)
			}
		}
		f.st.index = max(f.st.index, e.Index)
	})
	f.dirty = true
	return nil
}

func (f *follower) Idle(pos nomad.Position) error {
	if pos.Written {
		f.pos = pos
	}
	if f.dirty {
		f.dirty = false
		f.pub.soon(f.st)
	}
	return nil
}

func (f *follower) Discontinuity(nomad.Discontinuity) error { return errRelist }

func (f *follower) Up() {
	f.pub.with(func() { f.st.live, f.st.err = true, "" })
	f.pub.soon(f.st)
}

func (f *follower) Down(err error) {
	f.pub.with(func() { f.st.failed(fmt.Errorf("the Job event stream is down: %w", err), f.st.now()) })
	f.pub.soon(f.st)
}

// publisher reports sets, at most one per every (a burst of events is one
// set, sent when it has been quiet that long since the last), and guards
// the state it reads with mu.
type publisher struct {
	found func(agent.Discovered)
	every time.Duration

	mu    sync.Mutex
	last  time.Time
	timer *time.Timer
	done  bool
}

// with runs f holding the lock that guards the state.
func (p *publisher) with(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f()
}

// now reports st's set at once.
func (p *publisher) now(st *state) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sendLocked(st)
}

func (p *publisher) sendLocked(st *state) {
	if p.done {
		return
	}
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.last = time.Now()
	p.found(st.set())
}

// soon reports st's set now if none was sent for every, else once every has
// passed since the last.
func (p *publisher) soon(st *state) {
	p.mu.Lock()
	defer p.mu.Unlock()
	wait := p.every - time.Since(p.last)
	switch {
	case wait <= 0:
		p.sendLocked(st)
	case p.timer == nil && !p.done:
		p.timer = time.AfterFunc(wait, func() {
			p.mu.Lock()
			defer p.mu.Unlock()
			p.timer = nil
			p.sendLocked(st)
		})
	}
}

// stop sends nothing more.
func (p *publisher) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	if p.timer != nil {
		p.timer.Stop()
	}
}

// NewClient builds the Nomad client from the standard environment
// (api.DefaultConfig: NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ...), with the
// nomad block's attributes on top; the token file is read again before each
// connection.
func NewClient(s config.Nomad) (*nomad.Client, error) {
	cfg := api.DefaultConfig()
	if s.Address != "" {
		cfg.Address = s.Address
	}
	if s.Region != "" {
		cfg.Region = s.Region
	}
	tls := cfg.TLSConfig
	for dst, v := range map[*string]string{&tls.CACert: s.CACert, &tls.ClientCert: s.ClientCert, &tls.ClientKey: s.ClientKey, &tls.TLSServerName: s.TLSServerName} {
		if v != "" {
			*dst = v
		}
	}
	if s.TLSSkipVerify {
		tls.Insecure = true
	}
	return nomad.NewClient(cfg, nomad.TokenFromEnvOrFile(s.TokenFile))
}
