package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Peer is one sibling agent, as the catalog lists it.
type Peer struct {
	// Node is its node's ID: what ranks it.
	Node string
	// Address is the host:port of its listener.
	Address string
}

// Name is the node as messages and the status show it: the first 8
// characters of its ID, as `nomad node status` does.
func (p Peer) Name() string { return p.Node[:min(8, len(p.Node))] }

// Lister lists the live sibling agents (this agent's own registration may
// be among them: it is left out by node).
type Lister interface {
	Peers(ctx context.Context) ([]Peer, error)
}

// Copy is an image a peer served: its ID, loaded and verified, and who
// served it.
type Copy struct {
	ID    string
	Peer  Peer
	Bytes int64
}

// ErrFetchYourself is Image's answer, asked first, when no agent ranked
// ahead of this one for the image expects it: this agent is the one that
// fetches it from the registries, and the others copy it from here.
var ErrFetchYourself = errors.New("this agent ranks first among the agents that expect the image: it fetches it from the registries, and its peers copy it from it")

// NoCopyError is why no peer served an image: each peer asked and its
// answer.
type NoCopyError struct {
	Tried []string
	// Waited is true when a peer was getting the image (or had it, busy)
	// and the wait ran out.
	Waited bool
}

func (e *NoCopyError) Error() string {
	what := "no peer has it"
	if e.Waited {
		what = "no peer served it within the peers block's wait"
	}
	if len(e.Tried) == 0 {
		return what + " (no peer is registered)"
	}
	return what + ": " + strings.Join(e.Tried, "; ")
}

// Source takes images from peer agents: it asks them (in an order every
// agent computes the same way, see rank) and streams the one-image bundle
// a peer serves into the Engine through a bundle.Loader (Loader.Stream: the
// archive's structure, no tag, the ID the manifest names and the peer
// announced, a digest pin proven, all checked before the Engine has the
// archive's end). Nothing is written to disk but by the Engine's load. It
// tags nothing: the caller tags the ID it returns.
type Source struct {
	// Self is this agent's node ID (empty until known: every agent then
	// ranks it last).
	Self   func() string
	Lister Lister
	// Token is the identity this agent presents (X-Nomad-Token).
	Token  func() (string, error)
	Engine bundle.Engine
	// HTTP, when set, is the client transfers use (tests); by default one
	// with a 5 s connect and a 25 s answer deadline (a held question
	// included).
	HTTP *http.Client
	// MaxSize bounds one transfer.
	MaxSize int64
	// Wait bounds, asked first, the wait for a peer that is getting the
	// image; asked last, the wait for a peer that has it and is busy.
	Wait time.Duration
	// StallTimeout ends a transfer silent that long, unless the options
	// Image is given set their own (the config's current stall_timeout);
	// default 2 min.
	StallTimeout time.Duration
	// Taken, when set, is told the bytes taken from peers as they come.
	Taken func(bytes int64)
	Log   *slog.Logger

	once   sync.Once
	client *http.Client
}

// maxAsk bounds the peers asked in one round, beyond the ones ranked ahead
// of this agent that are asked whether they are getting the image: what
// an agent waiting for an image costs its peers.
const maxAsk = 4

// maxAhead bounds the peers ranked ahead that are asked whether they expect
// an image: past that many that don't, this agent fetches it itself.
const maxAhead = 16

// settle is how long, asked first, an agent gives the peers ranked ahead
// of it that do not expect an image yet to learn of it before it fetches
// the image itself: on a real Nomad each node's agent hears of a new image
// on its own, milliseconds to a template's re-render apart.
const settle = time.Second

// Rounds: the pause between two, growing from firstPause to lastPause
// (each with up to a quarter more, so that the waiting agents spread out).
const (
	firstPause = time.Second
	lastPause  = 5 * time.Second
)

func (s *Source) httpClient() *http.Client {
	s.once.Do(func() {
		s.client = s.HTTP
		if s.client == nil {
			s.client = &http.Client{Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				ResponseHeaderTimeout: MaxHold + 15*time.Second,
				MaxIdleConnsPerHost:   1,
				IdleConnTimeout:       30 * time.Second,
			}}
		}
	})
	return s.client
}

// stall is the transfer's watchdog: the caller's current stall_timeout
// (opts), else StallTimeout, else 2 min.
func (s *Source) stall(opts registry.ArchiveOptions) time.Duration {
	if opts.StallTimeout > 0 {
		return opts.StallTimeout
	}
	if s.StallTimeout > 0 {
		return s.StallTimeout
	}
	return 2 * time.Minute
}

// Image copies expected (pinned to dgst when set) from a peer.
//
// Asked first (the peers block's order "first"), the agents that need the
// same image agree, without a coordinator, which fetches it from the
// registries: the first in rank order that expects it. Image returns
// ErrFetchYourself when that is this agent; otherwise it waits (up to
// Wait) for a peer to have it and copies it from the first that serves it,
// asking the one getting it and, each round, up to maxAsk others in an
// order of this agent's own, so that copies fan out from every agent that
// already has it.
//
// Asked last (first false), it copies from any peer that has it, waiting
// only while the ones that have it are busy.
func (s *Source) Image(ctx context.Context, expected, dgst string, first bool, opts registry.ArchiveOptions) (Copy, error) {
	deadline := time.Now().Add(s.Wait)
	tried := map[string]string{}
	var order []string // the nodes in tried, in the order first asked
	note := func(p Peer, what string) {
		if _, ok := tried[p.Node]; !ok {
			order = append(order, p.Node)
		}
		tried[p.Node] = p.Name() + " (" + p.Address + "): " + what
	}
	pause := firstPause
	settled := false
	for ctx.Err() == nil {
		peers, err := s.Lister.Peers(ctx)
		if err != nil {
			return Copy{}, fmt.Errorf("listing the peers: %w", err)
		}
		self := ""
		if s.Self != nil {
			self = s.Self()
		}
		ahead, others := rank(peers, self, expected)
		wait := false
		asked := map[string]bool{}
		if first {
			// The ones ahead of this agent, until one that expects it; the
			// one getting it holds the question until it has it (up to
			// MaxHold, within the wait), so that the copy starts at once.
			hold := min(MaxHold, time.Until(deadline))
			askAgain := false
			for _, p := range ahead[:min(len(ahead), maxAhead)] {
				asked[p.Node] = true
				c, o, err := s.try(ctx, p, expected, dgst, opts, hold)
				if o == copied {
					return c, nil
				}
				note(p, describe(o, err))
				askAgain = askAgain || o == notExpected || o == refused
				if o == getting || o == busy {
					wait = true
					break
				}
			}
			if !wait && askAgain && !settled && time.Until(deadline) > settle {
				// The agents learn of a new image each on its own (each
				// node renders its config, each reads the job), moments
				// apart: one ranked ahead that does not expect it yet is
				// asked once more before this agent pulls it too. So is
				// one that could not answer (not reachable, or not able
				// to check this agent's identity now, as just after the
				// job's update).
				settled = true
				select {
				case <-ctx.Done():
				case <-time.After(settle):
				}
				continue
			}
			if !wait {
				return Copy{}, ErrFetchYourself
			}
		}
		n := 0
		for _, p := range personal(append(ahead, others...), self, expected) {
			if asked[p.Node] || n == maxAsk {
				continue
			}
			n++
			c, o, err := s.try(ctx, p, expected, dgst, opts, 0)
			if o == copied {
				return c, nil
			}
			note(p, describe(o, err))
			if o == busy || first && o == getting {
				wait = true
			}
		}
		if !wait || !time.Now().Before(deadline) {
			e := &NoCopyError{Waited: wait}
			for _, node := range order {
				e.Tried = append(e.Tried, tried[node])
			}
			return Copy{}, e
		}
		d := min(pause+rand.N(pause/4+1), time.Until(deadline))
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
		pause = min(2*pause, lastPause)
	}
	return Copy{}, context.Cause(ctx)
}

// outcome is what asking one peer came to.
type outcome int

const (
	copied      outcome = iota
	notExpected         // it does not expect the image: it never will have it
	getting             // it expects it and does not have it yet
	busy                // it has it and serves others now
	unusable            // it failed to get it, or has other content
	refused             // it, or what it sent, was refused: an error says why
)

func describe(o outcome, err error) string {
	switch o {
	case notExpected:
		return "does not expect it"
	case busy:
		return "has it, busy"
	}
	if err != nil {
		return err.Error()
	}
	return "unusable"
}

var idPattern = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// try asks p for expected and, when p serves it, copies, loads and
// verifies it. A positive hold asks p to hold the answer that long at most
// while it is getting the image.
func (s *Source) try(ctx context.Context, p Peer, expected, dgst string, opts registry.ArchiveOptions, hold time.Duration) (Copy, outcome, error) {
	q := url.Values{"ref": {expected}}
	if hold > 0 {
		q.Set("wait", hold.Round(time.Millisecond).String())
	}
	if dgst != "" {
		q.Set("digest", dgst)
	}
	u := (&url.URL{Scheme: "http", Host: p.Address, Path: Path, RawQuery: q.Encode()}).String()
	tctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(tctx, http.MethodGet, u, nil)
	if err != nil {
		return Copy{}, refused, err
	}
	if s.Token != nil {
		tok, err := s.Token()
		if err != nil {
			return Copy{}, refused, fmt.Errorf("this agent's identity can't be read: %w", err)
		}
		req.Header.Set("X-Nomad-Token", tok)
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return Copy{}, refused, fmt.Errorf("not answering: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var a Answer
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&a)
		msg := a.Error
		if msg == "" {
			msg = resp.Status
		}
		msg = clip(msg)
		switch {
		case resp.StatusCode == http.StatusTooManyRequests:
			return Copy{}, busy, nil
		case resp.StatusCode == http.StatusNotFound && !a.Expected:
			return Copy{}, notExpected, nil
		case resp.StatusCode == http.StatusNotFound && (a.State == "wanted" || a.State == "pulling" || a.State == "changing"):
			return Copy{}, getting, fmt.Errorf("getting it (%s)", clip(a.State))
		case resp.StatusCode == http.StatusNotFound:
			return Copy{}, unusable, errors.New(msg)
		}
		return Copy{}, refused, fmt.Errorf("%d: %s", resp.StatusCode, msg)
	}
	id := resp.Header.Get(IDHeader)
	if !idPattern.MatchString(id) {
		return Copy{}, refused, fmt.Errorf("announced no image ID (%s %q)", IDHeader, clip(id))
	}
	c, err := s.copyFrom(ctx, tctx, cancel, resp.Body, p, id, expected, dgst, opts)
	if err != nil {
		return Copy{}, refused, err
	}
	return c, copied, nil
}

// copyFrom streams the transfer into the Engine through a bundle.Loader,
// which vets it on the way and verifies what was loaded. The transfer is
// read under tctx, which the stall watchdog cancels (and with it the load,
// which is then cut short); the load, once the transfer has come whole,
// under ctx: the Engine's own timeouts bound it, however long the layers
// take to apply.
func (s *Source) copyFrom(ctx, tctx context.Context, cancel context.CancelCauseFunc, body io.Reader, p Peer, id, expected, dgst string, opts registry.ArchiveOptions) (Copy, error) {
	stall := s.stall(opts)
	watchdog := time.AfterFunc(stall, func() { cancel(fmt.Errorf("the transfer made no progress for %s", stall)) })
	defer watchdog.Stop()
	var n int64
	r := &progressReader{r: body, left: s.MaxSize, kick: func(k int) {
		n += int64(k)
		watchdog.Reset(stall)
		if s.Taken != nil {
			s.Taken(int64(k))
		}
	}, end: func() { watchdog.Stop() }}
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	loader := bundle.NewLoader(s.Engine, log.With("peer", p.Name()))
	got, err := loader.Stream(ctx, r, expected, dgst, id, opts)
	watchdog.Stop()
	switch {
	case r.over:
		return Copy{}, fmt.Errorf("sent more than the peers block's max_size (%d bytes): cut off", s.MaxSize)
	case err != nil && context.Cause(tctx) != nil && !errors.Is(context.Cause(tctx), context.Canceled):
		return Copy{}, fmt.Errorf("transfer cut off after %d bytes: %w", n, context.Cause(tctx))
	case err != nil:
		return Copy{}, fmt.Errorf("what it sent was refused (%d bytes taken): %w", n, err)
	}
	return Copy{ID: got, Peer: p, Bytes: n}, nil
}

// progressReader tells kick of every read that brought bytes and end of
// the end of the stream, and fails (over set) once more than left bytes
// came.
type progressReader struct {
	r    io.Reader
	left int64
	over bool
	kick func(int)
	end  func()
}

// errTooLarge is what a transfer longer than the peers block's max_size
// reads as.
var errTooLarge = errors.New("the transfer is larger than max_size")

func (p *progressReader) Read(b []byte) (int, error) {
	if int64(len(b)) > p.left+1 {
		b = b[:p.left+1]
	}
	n, err := p.r.Read(b)
	if n > 0 {
		p.kick(n)
	}
	if int64(n) > p.left {
		p.over = true
		return 0, errTooLarge
	}
	p.left -= int64(n)
	if err == io.EOF {
		p.end()
	}
	return n, err
}

// clip bounds what a peer's answer puts in a message.
func clip(s string) string {
	const max = 200
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
