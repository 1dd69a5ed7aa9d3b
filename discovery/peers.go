package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/cluster"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/identity"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/peer"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// The peers (the nomad block's peers block): every agent serves its own
// expected, present images to the others (peer.Server, on its listener
// beside the relay), and takes images from them (peer.Source). The peers
// are the registrations of the agents' service in Nomad's catalog by this
// agent's own job and namespace (its identity's claims), and each transfer
// is authorized as the relay's subscriptions are (agentAuthorizer).

// peerLink is what the peers block sets up for one Run.
type peerLink struct {
	server *peer.Server
	source *peer.Source
}

// Peer is the handler of GET /v1/peer/image on the agent's listener: the
// transfers this agent serves while its config has a peers block, 404
// otherwise.
func (d *Discoverer) Peer() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := d.peers.Load()
		if l == nil {
			http.Error(w, "peer: off on this agent (nomad peers block not set)", http.StatusNotFound)
			return
		}
		l.server.ServeHTTP(w, r)
	})
}

// Copy takes expected from a peer (see agent.Peers).
func (d *Discoverer) Copy(ctx context.Context, expected, dgst string, first bool, opts registry.ArchiveOptions) (string, string, error) {
	l := d.peers.Load()
	if l == nil {
		return "", "", errors.New("the peers are not set up (no nomad peers block, or discovery not running)")
	}
	c, err := l.source.Image(ctx, expected, dgst, first, opts)
	switch {
	case errors.Is(err, peer.ErrFetchYourself):
		return "", "", fmt.Errorf("%w: %w", agent.ErrOwnFetch, err)
	case err != nil:
		return "", "", err
	}
	return c.ID, c.Peer.Name(), nil
}

var _ agent.Peers = (*Discoverer)(nil)

// startPeers sets the peers up for this Run, when settings turn them on,
// and returns what undoes it.
func (d *Discoverer) startPeers(settings config.Nomad, c *nomad.Client, self func() string, log *slog.Logger) (stop func(), err error) {
	p := settings.Peers
	if p == nil {
		return func() {}, nil
	}
	if d.Engine == nil {
		return nil, errors.New("nomad peers: no Docker Engine to serve and load images (an agent wiring error)")
	}
	file, err := identityFile("nomad peers", p.IdentityFile)
	if err != nil {
		return nil, err
	}
	token := nomad.TokenFromEnvOrFile(file)
	bytes := func(direction string) func(int64) {
		if d.PeerBytes == nil {
			return nil
		}
		return func(n int64) { d.PeerBytes(direction, n) }
	}
	held := d.Held
	if held == nil {
		held = func(string) peer.Held { return peer.Held{} }
	}
	l := &peerLink{
		server: &peer.Server{
			Held: held, Engine: d.Engine, MaxServing: p.MaxServing, StallTimeout: d.StallTimeout,
			Authorize: agentAuthorizer(c, p.Audience, token, log, "peer", peer.ErrUnavailable),
			Served:    bytes("served"), Count: d.PeerServe, Log: log,
		},
		source: &peer.Source{
			Self: self, Token: token, Engine: d.Engine, MaxSize: p.MaxSize, Wait: p.Wait,
			Taken: bytes("taken"), Log: log, // the fetch passes its stall_timeout
			Lister: &catalogPeers{c: c, self: self, service: p.Service, token: token, timeout: cmpOr(d.CallTimeout, 30*time.Second)},
		},
	}
	d.peers.Store(l)
	return func() { d.peers.CompareAndSwap(l, nil) }, nil
}

// catalogPeers lists the peers from Nomad's service catalog (the cluster
// view's own reader, cluster.NewNomadCatalogFrom): the registrations of
// service by the job and namespace of this agent's own identity, read at
// most once per peersFresh while it lists any (a rollout asks for many
// images at once; the catalog changes far more slowly), and again at each
// call while it lists none but this agent's own (the agents' registrations
// come a moment after their tasks start, and while the job is updated one
// node after the other, the updated node's is gone for about a second, as
// recorded in testdata/nomad-2.0.5/rolling-update: an agent that kept a
// list of itself alone would take itself for the only one, and fetch every
// image itself, for a whole peersFresh). A registration whose
// address is not an IP address, or that the catalog reader finds invalid,
// is no peer.
type catalogPeers struct {
	c       *nomad.Client
	self    func() string // this agent's node ID, "" while not known
	service string
	token   func() (string, error)
	timeout time.Duration

	mu      sync.Mutex
	catalog cluster.Catalog // made from the identity's claims at the first call
	at      time.Time
	peers   []peer.Peer
}

const peersFresh = 15 * time.Second

func (cp *catalogPeers) Peers(ctx context.Context) ([]peer.Peer, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if !cp.at.IsZero() && time.Since(cp.at) < peersFresh {
		return cp.peers, nil
	}
	if cp.catalog == nil {
		tok, err := cp.token()
		var mine identity.Claims
		if err == nil {
			mine, err = identity.ParseUnverified(tok)
		}
		if err != nil {
			return nil, fmt.Errorf("this agent's own identity can't be read, so its job's registrations can't be told: %w", err)
		}
		cp.catalog = cluster.NewNomadCatalogFrom(cp.c, mine.Namespace, cluster.CatalogOptions{Service: cp.service, Job: mine.JobID, CallTimeout: cp.timeout})
	}
	agents, err := cp.catalog.Agents(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", cp.catalog, err)
	}
	var out []peer.Peer
	for _, a := range agents {
		host, _, err := net.SplitHostPort(a.Address)
		if a.Invalid != "" || err != nil || net.ParseIP(host) == nil {
			continue
		}
		out = append(out, peer.Peer{Node: a.NodeID, Address: a.Address})
	}
	cp.peers, cp.at = out, time.Time{}
	if slices.ContainsFunc(out, func(p peer.Peer) bool { return cp.self == nil || p.Node != cp.self() }) {
		cp.at = time.Now()
	}
	return out, nil
}
