package config

import (
	"strings"
	"time"

	"github.com/docker/go-units"
	"github.com/hashicorp/hcl/v2"
)

// Peers is the nomad block's peers block: the sibling agents become a
// source of every expected image (config and discovered alike), found
// through Nomad's service catalog (the prefetch job's own service), each
// transfer authenticated with the agents' workload identity (the one the
// relay uses) and verified before anything is tagged. Its presence turns
// it on.
type Peers struct {
	// Order is where the peers come among the registries: PeersLast (the
	// default) asks them only once the expected reference and every source
	// failed; PeersFirst asks them before any registry, and the agents
	// that need the same image agree which one of them fetches it from the
	// registries, the others copying it from a peer that has it.
	Order string
	// Wait bounds how long, under PeersFirst, an agent waits for a peer to
	// have an image before it goes to the registries itself (default
	// DefaultPeersWait).
	Wait time.Duration
	// MaxServing bounds the transfers this agent serves at once (default
	// DefaultPeersMaxServing); a peer asking beyond it is told to try
	// another.
	MaxServing int
	// MaxSize bounds one transfer this agent takes (default
	// DefaultPeersMaxSize): a peer sending more is cut off and skipped.
	MaxSize int64
	// Service is the service name the agents register in Nomad's catalog
	// (default DefaultPeersService, as the job file does): its
	// registrations by this agent's own job are the peers.
	Service string
	// IdentityFile and Audience are the workload identity this agent
	// presents to its peers and checks theirs against, shared with the
	// relay block (the same defaults: ${NOMAD_SECRETS_DIR}/nomad_relay.jwt
	// and DefaultRelayAudience).
	IdentityFile string
	Audience     string
	Pos          Pos
}

// The values of the peers block's order.
const (
	PeersFirst = "first"
	PeersLast  = "last"
)

// The peers block's defaults and bounds.
const (
	DefaultPeersWait       = 2 * time.Minute
	MaxPeersWait           = time.Hour
	DefaultPeersMaxServing = 3
	MaxPeersMaxServing     = 64
	DefaultPeersMaxSize    = 16 << 30
	MinPeersMaxSize        = 1 << 20
	DefaultPeersService    = "prefetch"
)

var peersSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "order"}, {Name: "wait"}, {Name: "max_serving"}, {Name: "max_size"},
		{Name: "service"}, {Name: "identity_file"}, {Name: "audience"},
	},
}

// peers reads the peers block.
func (p *parser) peers(b *hcl.Block) *Peers {
	content, ds := b.Body.Content(peersSchema)
	p.diags(ds)
	ps := &Peers{
		Order: PeersLast, Wait: DefaultPeersWait, MaxServing: DefaultPeersMaxServing, MaxSize: DefaultPeersMaxSize,
		Service: DefaultPeersService, Audience: DefaultRelayAudience, Pos: p.pos(b.DefRange),
	}
	for name, dst := range map[string]*string{
		"service": &ps.Service, "identity_file": &ps.IdentityFile, "audience": &ps.Audience,
	} {
		if a, ok := content.Attributes[name]; ok {
			*dst = p.nonEmptyString(a, "nomad peers")
		}
	}
	if a, ok := content.Attributes["order"]; ok {
		if v, ok := p.stringAttr(a); ok {
			switch v {
			case PeersFirst, PeersLast:
				ps.Order = v
			default:
				p.errorf(a.Expr.Range(), "nomad peers: order must be %q (before any registry: one registry pull per image per cluster) or %q (only when every registry failed), got %q", PeersFirst, PeersLast, v)
			}
		}
	}
	if a, ok := content.Attributes["wait"]; ok {
		if s, d, ok := p.durationAttr(a); ok {
			if d > MaxPeersWait {
				p.errorf(a.Expr.Range(), "nomad peers: wait must be at most %s, got %q", shortDuration(MaxPeersWait), s)
			}
			ps.Wait = d
		}
	}
	if a, ok := content.Attributes["max_serving"]; ok {
		if v, ok := p.intAttr(a); ok {
			if v < 1 || v > MaxPeersMaxServing {
				p.errorf(a.Expr.Range(), "nomad peers: max_serving must be between 1 and %d, got %d", MaxPeersMaxServing, v)
			}
			ps.MaxServing = v
		}
	}
	if a, ok := content.Attributes["max_size"]; ok {
		if s, ok := p.stringAttr(a); ok {
			n, err := units.RAMInBytes(strings.TrimSpace(s))
			switch {
			case err != nil:
				p.errorf(a.Expr.Range(), "nomad peers: max_size %q is not a size (want e.g. \"16GiB\" or \"500MiB\")", s)
			case n < MinPeersMaxSize:
				p.errorf(a.Expr.Range(), "nomad peers: max_size must be at least 1MiB, got %q", s)
			default:
				ps.MaxSize = n
			}
		}
	}
	return ps
}
