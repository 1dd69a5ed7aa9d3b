package config

import (
	"strings"

	"github.com/distribution/reference"
	"github.com/hashicorp/hcl/v2"
)

// Nomad turns discovery on: the agent watches Nomad's jobs and keeps the
// images of every docker task that can run on its node, with no list to
// maintain. The Nomad address, token and TLS settings come from the standard
// environment (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_CACERT, ...), as every Nomad
// tool reads them; the attributes set here override it.
type Nomad struct {
	Address       string
	Region        string
	TokenFile     string // re-read before each connection (workload identity rotates)
	CACert        string
	ClientCert    string
	ClientKey     string
	TLSServerName string
	TLSSkipVerify bool
	// NodeID is the node to keep images for; empty means the agent's own
	// node, learnt from /v1/agent/self (which needs agent:read). In a Nomad
	// job, "${node.unique.id}" passed through the environment avoids that.
	NodeID string
	// Namespaces are globs over namespace names; default ["*"].
	Namespaces []string
	// Rewrites map a job's image to its sources: the first whose From is a
	// prefix of the normalised reference gives one source per entry of
	// Sources, the prefix replaced.
	Rewrites []Rewrite
	// Include and Exclude are globs over the normalised reference (* matches
	// any run of characters, / included): an image is kept when it matches
	// an Include (or there is none) and no Exclude.
	Include, Exclude []string
	// InfraImage is Nomad's pause image for bridge networking; nil means
	// Nomad's default for the node's architecture
	// (registry.k8s.io/pause-ARCH:3.3), "" turns it off.
	InfraImage *string
	// MaxImages bounds the images kept for the jobs (the infra image
	// aside): past it, the images of the newest jobs are left out, and
	// the status says which (default DefaultMaxDiscoveredImages).
	MaxImages int
	// IncludeUndecided keeps the images of jobs (and groups) whose
	// placement this agent can't decide (a version or semver constraint,
	// an operator or target it does not know); by default they are
	// skipped and reported.
	IncludeUndecided bool
	// AllowedPrefixes, when set, are the only registries or repository
	// prefixes a job's image may come from ("registry.service.consul:5000",
	// "ghcr.io/acme/"), matched on the normalised reference at a component
	// boundary; an image outside them is skipped and reported.
	AllowedPrefixes []string
	// HoldReadiness makes a discovered image that can't be fetched hold
	// /readyz at 503, as a config image does; by default only its first
	// fetch does.
	HoldReadiness bool
	// Yield is what the agent does while a task starting on this node
	// needs an image that is not present (Nomad is pulling it): YieldCancel
	// (the default) cancels the background pulls in flight and starts no
	// new one until the task's image is there, YieldPause lets those in
	// flight finish but starts no new one, YieldOff ignores Nomad's pulls.
	Yield string
	// BackgroundPulls is the budget of background pulls (resyncs, images no
	// starting task waits for) at once while the nomad block is set, below
	// concurrency: Docker's download slots (max-concurrent-downloads,
	// default 3, shared by every pull on the daemon) are left to Nomad's
	// own pulls. Default DefaultBackgroundPulls.
	BackgroundPulls int
	// Relay, when set, elects one agent to follow Nomad's Job events for
	// the others (the relay block).
	Relay *Relay
	// Peers, when set, makes the sibling agents a source of every
	// expected image (the peers block).
	Peers *Peers
	Pos   Pos
}

// The values of the nomad block's yield.
const (
	YieldCancel = "cancel"
	YieldPause  = "pause"
	YieldOff    = "off"
)

// DefaultBackgroundPulls and MaxBackgroundPulls are background_pulls'
// default and ceiling: one pull at a time is "one slot's worth" as far as
// a client can ask (Docker spreads one pull's layers over up to
// max-concurrent-downloads slots, and no API call bounds that per pull).
const (
	DefaultBackgroundPulls = 1
	MaxBackgroundPulls     = MaxConcurrency
)

// DefaultMaxDiscoveredImages and MaxDiscoveredImages are max_images'
// default and ceiling: a node rarely runs more than a few dozen distinct
// images, and each kept image is disk, a resync HEAD and metric series.
const (
	DefaultMaxDiscoveredImages = 100
	MaxDiscoveredImages        = 10000
)

// AllowedPrefix reports whether the normalised reference ref is under
// prefix: ref starts with it, and either prefix ends with "/" or ref goes
// on with "/", ":" or "@" (so "ghcr.io/acme" does not admit
// "ghcr.io/acmeevil/x", nor "reg.example" "reg.example.evil.io/x").
func AllowedPrefix(ref, prefix string) bool {
	rest, ok := strings.CutPrefix(ref, prefix)
	if !ok {
		return false
	}
	return strings.HasSuffix(prefix, "/") || rest == "" || strings.ContainsRune("/:@", rune(rest[0]))
}

// Rewrite is one rewrite block of the nomad block.
type Rewrite struct {
	From    string
	Sources []string
}

// DefaultInfraImage is Nomad's infra_image for a node of architecture arch.
func DefaultInfraImage(arch string) string {
	return "registry.k8s.io/pause-" + arch + ":3.3"
}

var (
	nomadSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "address"}, {Name: "region"}, {Name: "token_file"},
			{Name: "ca_cert"}, {Name: "client_cert"}, {Name: "client_key"},
			{Name: "tls_server_name"}, {Name: "tls_skip_verify"}, {Name: "node_id"},
			{Name: "namespaces"}, {Name: "include"}, {Name: "exclude"}, {Name: "infra_image"},
			{Name: "max_images"}, {Name: "include_undecided"}, {Name: "allowed_prefixes"}, {Name: "hold_readiness"},
			{Name: "yield"}, {Name: "background_pulls"},
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "rewrite"}, {Type: "relay"}, {Type: "peers"}},
	}
	rewriteSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "from", Required: true}, {Name: "sources", Required: true}},
	}
)

// nomad reads the nomad block.
func (p *parser) nomad(b *hcl.Block) *Nomad {
	content, ds := b.Body.Content(nomadSchema)
	p.diags(ds)
	n := &Nomad{Namespaces: []string{"*"}, MaxImages: DefaultMaxDiscoveredImages, Yield: YieldCancel, BackgroundPulls: DefaultBackgroundPulls, Pos: p.pos(b.DefRange)}
	for name, dst := range map[string]*string{
		"address": &n.Address, "region": &n.Region, "token_file": &n.TokenFile,
		"ca_cert": &n.CACert, "client_cert": &n.ClientCert, "client_key": &n.ClientKey,
		"tls_server_name": &n.TLSServerName, "node_id": &n.NodeID,
	} {
		if a, ok := content.Attributes[name]; ok {
			*dst = p.nonEmptyString(a, "nomad")
		}
	}
	if a, ok := content.Attributes["tls_skip_verify"]; ok {
		n.TLSSkipVerify, _ = p.boolAttr(a)
	}
	if a, ok := content.Attributes["address"]; ok && n.Address != "" &&
		!strings.HasPrefix(n.Address, "http://") && !strings.HasPrefix(n.Address, "https://") && !strings.HasPrefix(n.Address, "unix://") {
		p.errorf(a.Expr.Range(), "nomad: address %q: want http://, https:// or unix://", n.Address)
	}
	if a, ok := content.Attributes["namespaces"]; ok {
		if ns, ok := p.stringListAttr(a); ok {
			if len(ns) == 0 {
				p.errorf(a.Expr.Range(), "nomad: namespaces must not be empty (leave it out for every namespace the token can read)")
			}
			n.Namespaces = ns
		}
	}
	for name, dst := range map[string]*[]string{"include": &n.Include, "exclude": &n.Exclude} {
		if a, ok := content.Attributes[name]; ok {
			*dst, _ = p.stringListAttr(a)
		}
	}
	if a, ok := content.Attributes["infra_image"]; ok {
		if s, ok := p.stringAttr(a); ok {
			if s != "" {
				if ref, err := reference.ParseNormalizedNamed(s); err != nil {
					p.errorf(a.Expr.Range(), "nomad: infra_image %q is not a valid image reference: %v", s, err)
				} else {
					s = reference.TagNameOnly(ref).String()
				}
			}
			n.InfraImage = &s
		}
	}
	p.nomadBounds(content.Attributes, n)
	p.nomadYield(content.Attributes, n)
	for _, rb := range content.Blocks {
		if rb.Type == "relay" {
			if n.Relay != nil {
				p.errorf(rb.DefRange, "nomad: duplicate relay block; the first is at line %d", n.Relay.Pos.Line)
				continue
			}
			n.Relay = p.relay(rb)
			continue
		}
		if rb.Type == "peers" {
			if n.Peers != nil {
				p.errorf(rb.DefRange, "nomad: duplicate peers block; the first is at line %d", n.Peers.Pos.Line)
				continue
			}
			n.Peers = p.peers(rb)
			continue
		}
		if rw, ok := p.rewrite(rb); ok {
			n.Rewrites = append(n.Rewrites, rw)
		}
	}
	return n
}

// nomadBounds reads the settings that bound what the jobs can make a node
// keep: max_images, include_undecided, allowed_prefixes, hold_readiness.
func (p *parser) nomadBounds(attrs hcl.Attributes, n *Nomad) {
	if a, ok := attrs["max_images"]; ok {
		if v, ok := p.intAttr(a); ok {
			if v < 1 || v > MaxDiscoveredImages {
				p.errorf(a.Expr.Range(), "nomad: max_images must be between 1 and %d, got %d", MaxDiscoveredImages, v)
			}
			n.MaxImages = v
		}
	}
	for name, dst := range map[string]*bool{"include_undecided": &n.IncludeUndecided, "hold_readiness": &n.HoldReadiness} {
		if a, ok := attrs[name]; ok {
			*dst, _ = p.boolAttr(a)
		}
	}
	if a, ok := attrs["allowed_prefixes"]; ok {
		prefixes, ok := p.stringListAttr(a)
		if ok && len(prefixes) == 0 {
			p.errorf(a.Expr.Range(), "nomad: allowed_prefixes must not be empty (leave it out to allow every registry)")
		}
		for _, s := range prefixes {
			if !validPrefix(s) {
				p.errorf(a.Expr.Range(), "nomad: allowed_prefixes: %q: want a registry host, optionally with a repository prefix, as in normalised references (\"registry.service.consul:5000\", \"docker.io/library/\", \"ghcr.io/acme/\")", s)
				continue
			}
			n.AllowedPrefixes = append(n.AllowedPrefixes, s)
		}
	}
}

// nomadYield reads how the agent gives way to Nomad's own pulls: yield and
// background_pulls.
func (p *parser) nomadYield(attrs hcl.Attributes, n *Nomad) {
	if a, ok := attrs["yield"]; ok {
		if v, ok := p.stringAttr(a); ok {
			switch v {
			case YieldCancel, YieldPause, YieldOff:
				n.Yield = v
			default:
				p.errorf(a.Expr.Range(), "nomad: yield must be %q, %q or %q, got %q", YieldCancel, YieldPause, YieldOff, v)
			}
		}
	}
	if a, ok := attrs["background_pulls"]; ok {
		if v, ok := p.intAttr(a); ok {
			if v < 1 || v > MaxBackgroundPulls {
				p.errorf(a.Expr.Range(), "nomad: background_pulls must be between 1 and %d, got %d", MaxBackgroundPulls, v)
			} else {
				n.BackgroundPulls = v
			}
		}
	}
}

// validPrefix: a prefix of normalised references starts with a registry
// host (a name with a dot or a port, or localhost) and holds no spaces,
// globs, tags or digests.
func validPrefix(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t*?@") {
		return false
	}
	host, rest, _ := strings.Cut(s, "/")
	if strings.Contains(rest, ":") {
		return false
	}
	return host == "localhost" || strings.HasPrefix(host, "localhost:") || strings.ContainsAny(host, ".:")
}

// rewrite reads one rewrite block: a prefix and the prefixes replacing it.
func (p *parser) rewrite(b *hcl.Block) (Rewrite, bool) {
	before := len(p.errs)
	content, ds := b.Body.Content(rewriteSchema)
	p.diags(ds)
	var rw Rewrite
	if a, ok := content.Attributes["from"]; ok {
		rw.From = p.nonEmptyString(a, "nomad rewrite")
	}
	if a, ok := content.Attributes["sources"]; ok {
		srcs, _ := p.stringListAttr(a)
		if len(srcs) == 0 {
			p.errorf(a.Expr.Range(), "nomad rewrite: sources must name at least one prefix")
		}
		for _, s := range srcs {
			if s == "" || strings.ContainsAny(s, " @") {
				p.errorf(a.Expr.Range(), "nomad rewrite: source prefix %q: want a registry and path prefix such as \"docker.io/\" or \"ghcr.io/acme/\"", s)
				continue
			}
			rw.Sources = append(rw.Sources, s)
		}
	}
	return rw, len(p.errs) == before
}
