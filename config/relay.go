package config

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Relay is the nomad block's relay block: the agents elect one of them
// (a Nomad variable lock) to follow Nomad's Job event stream, and the
// others follow it instead of Nomad, so that Nomad's servers serve one
// subscription per cluster rather than one per node. Its presence turns
// it on.
type Relay struct {
	// LockPath is the Nomad variable the agents contend for (default
	// DefaultRelayLockPath); its items name the holder's address.
	LockPath string
	// Namespace is the variable's namespace ("" is Nomad's default): the
	// prefetch job's own, for its workload identity to reach it.
	Namespace string
	// Advertise is the host:port the other agents reach this agent's
	// listener at; empty: the -listen address, when it names one host.
	Advertise string
	// IdentityFile holds the workload identity (a JWT) this agent presents
	// to the relay; empty: ${NOMAD_SECRETS_DIR}/nomad_relay.jwt, where
	// Nomad writes a task's identity named "relay".
	IdentityFile string
	// Audience is the audience a caller's identity must name (default
	// DefaultRelayAudience): an identity of its own, so that the agents
	// refuse the job's default identity. Nomad does not check audiences:
	// the identity is still a token with the job's policy (recorded from
	// 2.0.5; docs/security.md).
	Audience string
	// HistoryBytes bounds the frames the relay keeps for subscribers to
	// resume from (default DefaultRelayHistoryBytes).
	HistoryBytes int
	// MaxSubscribers bounds the subscriptions the relay serves at once
	// (default DefaultRelayMaxSubscribers).
	MaxSubscribers int
	// FallbackAfter: while no relay answers for this long, the agent
	// follows Nomad directly, and returns to the relay when one answers
	// (default DefaultRelayFallbackAfter, or 4 × LockTTL when that is
	// longer: above the time a dead holder takes to be replaced, so that
	// its death moves the agents to the next relay, not all of them to
	// Nomad at once).
	FallbackAfter time.Duration
	// LockTTL is the lock's TTL and lock delay (default
	// DefaultRelayLockTTL; Nomad takes 10 s to 24 h): a holder that dies
	// without releasing it is replaced about three of them later.
	LockTTL time.Duration
	Pos     Pos
}

// The relay block's defaults and bounds.
const (
	DefaultRelayLockPath       = "nomad/jobs/prefetch/relay"
	DefaultRelayAudience       = "nomad-prefetch-relay"
	DefaultRelayHistoryBytes   = 64 << 20
	MinRelayHistoryBytes       = 1 << 20
	MaxRelayHistoryBytes       = 1 << 30
	DefaultRelayMaxSubscribers = 1024
	MaxRelayMaxSubscribers     = 20000
	DefaultRelayFallbackAfter  = time.Minute
	MinRelayFallbackAfter      = time.Second
	MaxRelayFallbackAfter      = 10 * time.Minute
	DefaultRelayLockTTL        = 15 * time.Second
)

var relaySchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "lock_path"}, {Name: "namespace"}, {Name: "advertise"}, {Name: "identity_file"}, {Name: "audience"},
		{Name: "history_bytes"}, {Name: "max_subscribers"}, {Name: "fallback_after"}, {Name: "lock_ttl"},
	},
}

var relayVarPath = regexp.MustCompile(`^[a-zA-Z0-9\-_~/]{1,128}$`)

// relay reads the relay block.
func (p *parser) relay(b *hcl.Block) *Relay {
	content, ds := b.Body.Content(relaySchema)
	p.diags(ds)
	r := &Relay{
		LockPath: DefaultRelayLockPath, Audience: DefaultRelayAudience, HistoryBytes: DefaultRelayHistoryBytes,
		MaxSubscribers: DefaultRelayMaxSubscribers, FallbackAfter: DefaultRelayFallbackAfter, LockTTL: DefaultRelayLockTTL,
		Pos: p.pos(b.DefRange),
	}
	for name, dst := range map[string]*string{
		"lock_path": &r.LockPath, "namespace": &r.Namespace, "advertise": &r.Advertise,
		"identity_file": &r.IdentityFile, "audience": &r.Audience,
	} {
		if a, ok := content.Attributes[name]; ok {
			*dst = p.nonEmptyString(a, "nomad relay")
		}
	}
	if a, ok := content.Attributes["lock_path"]; ok {
		path := strings.Trim(r.LockPath, "/")
		if !relayVarPath.MatchString(path) || !strings.HasPrefix(path+"/", "nomad/jobs/") && strings.HasPrefix(path, "nomad") {
			p.errorf(a.Expr.Range(), "nomad relay: lock_path %q: want a Nomad variable path (a-z, A-Z, 0-9, -, _, ~, /; under nomad/ only nomad/jobs/...), e.g. %q", r.LockPath, DefaultRelayLockPath)
		}
	}
	if a, ok := content.Attributes["advertise"]; ok && r.Advertise != "" {
		host, port, err := net.SplitHostPort(r.Advertise)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			p.errorf(a.Expr.Range(), "nomad relay: advertise %q: want host:port, the address the other agents reach this agent's -listen at", r.Advertise)
		}
	}
	for _, bound := range []struct {
		name     string
		dst      *int
		min, max int
	}{
		{"history_bytes", &r.HistoryBytes, MinRelayHistoryBytes, MaxRelayHistoryBytes},
		{"max_subscribers", &r.MaxSubscribers, 1, MaxRelayMaxSubscribers},
	} {
		if a, ok := content.Attributes[bound.name]; ok {
			if v, ok := p.intAttr(a); ok {
				if v < bound.min || v > bound.max {
					p.errorf(a.Expr.Range(), "nomad relay: %s must be between %d and %d, got %d", bound.name, bound.min, bound.max, v)
				}
				*bound.dst = v
			}
		}
	}
	if a, ok := content.Attributes["fallback_after"]; ok {
		if s, d, ok := p.durationAttr(a); ok {
			if d < MinRelayFallbackAfter || d > MaxRelayFallbackAfter {
				p.errorf(a.Expr.Range(), "nomad relay: fallback_after must be between %s and %s, got %q", shortDuration(MinRelayFallbackAfter), shortDuration(MaxRelayFallbackAfter), s)
			}
			r.FallbackAfter = d
		}
	}
	if a, ok := content.Attributes["lock_ttl"]; ok {
		if s, d, ok := p.durationAttr(a); ok {
			if d > 24*time.Hour {
				p.errorf(a.Expr.Range(), "nomad relay: lock_ttl must be at most 24h (Nomad takes 10s to 24h), got %q", s)
			}
			r.LockTTL = d
		}
	}
	if _, set := content.Attributes["fallback_after"]; !set {
		r.FallbackAfter = max(DefaultRelayFallbackAfter, min(4*r.LockTTL, MaxRelayFallbackAfter))
	}
	return r
}
