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
	Pos        Pos
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
		},
		Blocks: []hcl.BlockHeaderSchema{{Type: "rewrite"}},
	}
	rewriteSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "from", Required: true}, {Name: "sources", Required: true}},
	}
)

// nomad reads the nomad block.
func (p *parser) nomad(b *hcl.Block) *Nomad {
	content, ds := b.Body.Content(nomadSchema)
	p.diags(ds)
	n := &Nomad{Namespaces: []string{"*"}, Pos: p.pos(b.DefRange)}
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
	for _, rb := range content.Blocks {
		if rw, ok := p.rewrite(rb); ok {
			n.Rewrites = append(n.Rewrites, rw)
		}
	}
	return n
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
