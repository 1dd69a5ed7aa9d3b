package config

import (
	_ "crypto/sha256" // registers sha256 with go-digest

	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/distribution/reference"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/opencontainers/go-digest"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
)

var (
	rootSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "allow_empty"},
			{Name: "concurrency"},
			{Name: "pull_timeout"},
			{Name: "stall_timeout"},
			{Name: "resync_interval"},
			{Name: "retry_initial"},
			{Name: "retry_max"},
			{Name: "alert_after"},
		},
		Blocks: []hcl.BlockHeaderSchema{
			{Type: "docker"},
			{Type: "image", LabelNames: []string{"name"}},
			{Type: "auth", LabelNames: []string{"host"}},
			{Type: "nomad"},
		},
	}
	dockerSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "host"}},
	}
	imageSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "expected", Required: true},
			{Name: "sources"},
			{Name: "digest"},
			{Name: "platform"},
		},
	}
	authSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "username", Required: true},
			{Name: "password_file"},
			{Name: "password_env"},
		},
	}
)

// Bounds on what a config file may be and on what is said about it, so that
// a wrong file (a binary, a log, /dev/zero rendered or mounted by mistake)
// costs neither time nor memory and is reported in a few lines.
const (
	// MaxSize is the largest config accepted, in bytes: a thousand images
	// take a quarter of it.
	MaxSize = 1 << 20
	// MaxProblems is how many errors, or warnings, are shown; the rest
	// are counted.
	MaxProblems = 20
	// maxMessage bounds one problem's message, which may quote a value.
	maxMessage = 512
)

// ReadFile reads the configuration file at path, but no more than MaxSize+1
// bytes of it: a larger file is refused as an Errors saying how large it is.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	if len(src) > MaxSize {
		size := int64(-1) // unknown: a pipe, a device
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		return nil, Errors{tooLarge(path, size)}
	}
	return src, nil
}

// Load reads and parses the configuration file at path.
func Load(path string) (Config, error) {
	src, err := ReadFile(path)
	if err != nil {
		return Config{File: path}, err
	}
	return Parse(path, src)
}

// Parse parses and validates src, naming it filename in every problem. On
// failure the error is an Errors holding every problem found, in file order.
// Warnings are returned in Config.Warnings either way, the first MaxProblems
// of them and then one that counts the rest.
//
// src must be UTF-8 text of at most MaxSize bytes; anything else is refused
// as a single problem before it is parsed.
func Parse(filename string, src []byte) (Config, error) {
	if len(src) > MaxSize {
		return Config{File: filename}, Errors{tooLarge(filename, int64(len(src)))}
	}
	if prob, ok := checkText(filename, src); !ok {
		return Config{File: filename}, Errors{prob}
	}
	p := &parser{file: filename}
	cfg := p.parse(src)
	slices.SortStableFunc(p.warns, comparePos)
	p.warns = capProblems(filename, p.warns, "warnings")
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, comparePos)
		return Config{File: filename, Warnings: p.warns}, p.errs
	}
	cfg.Warnings = p.warns
	return cfg, nil
}

// capProblems returns the first MaxProblems of probs and, if there were
// more, one that counts the rest: "and N more warnings".
func capProblems(filename string, probs []Problem, what string) []Problem {
	n := len(probs) - MaxProblems
	if n <= 0 {
		return probs
	}
	return append(probs[:MaxProblems:MaxProblems], Problem{Pos: Pos{File: filename}, Msg: fmt.Sprintf("and %d more %s", n, what)})
}

// tooLarge is the problem of a file over MaxSize; size is -1 when unknown.
func tooLarge(filename string, size int64) Problem {
	msg := "the file is larger than any config"
	if size >= 0 {
		msg = fmt.Sprintf("the file is %d bytes, larger than any config", size)
	}
	return Problem{Pos: Pos{File: filename}, Msg: fmt.Sprintf("%s: a config is at most %d bytes (1 MiB)", msg, MaxSize)}
}

// checkText finds the first byte that makes src something other than UTF-8
// text, a NUL or a byte that is not UTF-8, and reports where it is.
func checkText(filename string, src []byte) (Problem, bool) {
	if utf8.Valid(src) && bytes.IndexByte(src, 0) < 0 {
		return Problem{}, true
	}
	line, col := 1, 1
	for off := 0; off < len(src); {
		r, size := utf8.DecodeRune(src[off:])
		what := ""
		switch {
		case r == 0:
			what = "a NUL byte"
		case r == utf8.RuneError && size == 1:
			what = fmt.Sprintf("byte 0x%02x, which is not UTF-8,", src[off])
		}
		if what != "" {
			return Problem{
				Pos: Pos{File: filename, Line: line, Col: col},
				Msg: fmt.Sprintf("the file is not text: %s at byte offset %d; a config is UTF-8 text", what, off),
			}, false
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		off += size
	}
	return Problem{}, true
}

func comparePos(a, b Problem) int {
	if a.Pos.Line != b.Pos.Line {
		return a.Pos.Line - b.Pos.Line
	}
	return a.Pos.Col - b.Pos.Col
}

type parser struct {
	file  string
	errs  Errors
	warns []Problem
}

func (p *parser) pos(r hcl.Range) Pos {
	return Pos{File: p.file, Line: r.Start.Line, Col: r.Start.Column}
}

func (p *parser) errorf(r hcl.Range, format string, args ...any) {
	p.errs = append(p.errs, Problem{Pos: p.pos(r), Msg: clip(fmt.Sprintf(format, args...))})
}

func (p *parser) warnf(r hcl.Range, format string, args ...any) {
	p.warns = append(p.warns, Problem{Pos: p.pos(r), Msg: clip(fmt.Sprintf(format, args...))})
}

// clip bounds a message to maxMessage bytes by cutting out its middle, which
// is where a long quoted value sits: the start says what, the end says why.
func clip(msg string) string {
	if len(msg) <= maxMessage {
		return msg
	}
	head, tail := 300, len(msg)-200
	for head > 0 && !utf8.RuneStart(msg[head]) {
		head--
	}
	for tail < len(msg) && !utf8.RuneStart(msg[tail]) {
		tail++
	}
	return msg[:head] + " … " + msg[tail:]
}

// diags records HCL's own diagnostics. It reports whether any was an error.
func (p *parser) diags(ds hcl.Diagnostics) bool {
	failed := false
	for _, d := range ds {
		r := hcl.Range{Filename: p.file, Start: hcl.Pos{Line: 1, Column: 1}}
		if d.Subject != nil {
			r = *d.Subject
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += ": " + d.Detail
		}
		if d.Severity == hcl.DiagError {
			p.errorf(r, "%s", msg)
			failed = true
		} else {
			p.warnf(r, "%s", msg)
		}
	}
	return failed
}

func (p *parser) parse(src []byte) Config {
	cfg := Default(p.file)
	f, ds := hclsyntax.ParseConfig(src, p.file, hcl.InitialPos)
	if p.diags(ds) {
		return cfg
	}
	content, ds := f.Body.Content(rootSchema)
	p.diags(ds)

	// checkEmpty is false when allow_empty itself is malformed: that is
	// reported, and whether the file may be empty is then unknown.
	checkEmpty := p.settings(content.Attributes, &cfg)
	p.blocks(content.Blocks, &cfg)
	if checkEmpty && !cfg.AllowEmpty && cfg.Nomad == nil && !hasImageBlock(f.Body) {
		// Reloading such a file would make the agent drop every image it
		// keeps; an empty or truncated render looks just like this.
		p.errorf(hcl.Range{Start: hcl.InitialPos}, "no image blocks: a config with no image blocks would drop every image the agent keeps (an empty or truncated render?); if this node is to keep no image, set allow_empty = true")
	}
	return cfg
}

// settings reads the top-level attributes into cfg; ok is false when
// allow_empty is malformed.
func (p *parser) settings(attrs hcl.Attributes, cfg *Config) (allowEmptyKnown bool) {
	allowEmptyKnown = true
	if a, ok := attrs["allow_empty"]; ok {
		cfg.AllowEmpty, allowEmptyKnown = p.boolAttr(a)
	}
	if a, ok := attrs["concurrency"]; ok {
		if n, ok := p.intAttr(a); ok {
			if n < MinConcurrency || n > MaxConcurrency {
				p.errorf(a.Expr.Range(), "concurrency must be between %d and %d, got %d", MinConcurrency, MaxConcurrency, n)
			} else {
				cfg.Concurrency = n
			}
		}
	}
	for _, l := range durationLimits {
		a, ok := attrs[l.name]
		if !ok {
			continue
		}
		s, d, ok := p.durationAttr(a)
		bounds := fmt.Sprintf("%s must be between %s and %s", l.name, shortDuration(l.min), shortDuration(l.max))
		switch {
		case !ok:
		case d < l.min:
			p.errorf(a.Expr.Range(), "%s %q is shorter than its floor of %s (%s)", l.name, s, shortDuration(l.min), bounds)
		case d > l.max:
			p.errorf(a.Expr.Range(), "%s %q is longer than its ceiling of %s (%s)", l.name, s, shortDuration(l.max), bounds)
		default:
			*l.field(cfg) = d
		}
	}
	if cfg.RetryMax < cfg.RetryInitial {
		r := hcl.Range{Filename: p.file, Start: hcl.InitialPos}
		if a, ok := attrs["retry_max"]; ok {
			r = a.Expr.Range()
		} else if a, ok := attrs["retry_initial"]; ok {
			r = a.Expr.Range()
		}
		p.errorf(r, "retry_max (%s) must not be shorter than retry_initial (%s)", cfg.RetryMax, cfg.RetryInitial)
	}
	return allowEmptyKnown
}

// blocks reads the docker, image and auth blocks into cfg, refusing
// duplicates.
func (p *parser) blocks(blocks hcl.Blocks, cfg *Config) {
	var dockerSeen, nomadSeen *hcl.Block
	names := map[string]hcl.Range{}
	expected := map[string]hcl.Range{}
	hosts := map[string]hcl.Range{}
	for _, b := range blocks {
		switch b.Type {
		case "docker":
			if dockerSeen != nil {
				p.errorf(b.DefRange, "duplicate docker block; the first is at line %d", dockerSeen.DefRange.Start.Line)
				continue
			}
			dockerSeen = b
			cfg.Docker = p.docker(b)
		case "nomad":
			if nomadSeen != nil {
				p.errorf(b.DefRange, "duplicate nomad block; the first is at line %d", nomadSeen.DefRange.Start.Line)
				continue
			}
			nomadSeen = b
			cfg.Nomad = p.nomad(b)
		case "image":
			name := b.Labels[0]
			if prev, dup := names[name]; dup {
				p.errorf(b.LabelRanges[0], "duplicate image %q; the first is at line %d", name, prev.Start.Line)
				continue
			}
			names[name] = b.DefRange
			img, ok := p.image(b)
			if !ok {
				continue
			}
			if prev, dup := expected[img.Expected]; dup {
				p.errorf(b.DefRange, "image %q: expected %q is already listed at line %d", name, img.Expected, prev.Start.Line)
				continue
			}
			expected[img.Expected] = b.DefRange
			cfg.Images = append(cfg.Images, img)
		case "auth":
			a, ok := p.auth(b)
			if !ok {
				continue
			}
			if prev, dup := hosts[a.Host]; dup {
				p.errorf(b.LabelRanges[0], "duplicate auth for %q; the first is at line %d", a.Host, prev.Start.Line)
				continue
			}
			hosts[a.Host] = b.DefRange
			cfg.Auths = append(cfg.Auths, a)
		}
	}
}

// hasImageBlock reports whether body has an image block, even one too
// malformed (a missing label) to be decoded.
func hasImageBlock(body hcl.Body) bool {
	b, ok := body.(*hclsyntax.Body)
	return !ok || slices.ContainsFunc(b.Blocks, func(b *hclsyntax.Block) bool { return b.Type == "image" })
}

func (p *parser) docker(b *hcl.Block) Docker {
	content, ds := b.Body.Content(dockerSchema)
	p.diags(ds)
	var d Docker
	if a, ok := content.Attributes["host"]; ok {
		if s, ok := p.stringAttr(a); ok {
			if err := checkDockerHost(s); err != nil {
				p.errorf(a.Expr.Range(), "docker host %q: %v", s, err)
			} else {
				d.Host = s
			}
		}
	}
	return d
}

func checkDockerHost(s string) error {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return errors.New("want a URL such as unix:///var/run/docker.sock or tcp://127.0.0.1:2375")
	}
	switch scheme {
	case "unix", "npipe", "tcp", "http", "https", "ssh":
	default:
		return fmt.Errorf("unsupported scheme %q (want unix, tcp, npipe, http, https or ssh)", scheme)
	}
	if rest == "" {
		return errors.New("no address after the scheme")
	}
	return nil
}

func (p *parser) image(b *hcl.Block) (Image, bool) {
	before := len(p.errs)
	name := b.Labels[0]
	img := Image{Name: name, Pos: p.pos(b.DefRange)}
	if name == "" {
		p.errorf(b.LabelRanges[0], "image label must not be empty")
	}
	content, ds := b.Body.Content(imageSchema)
	p.diags(ds)

	var expectedDigest string
	var expectedRange hcl.Range
	if a, found := content.Attributes["expected"]; found {
		expectedRange = a.Expr.Range()
		img.Expected, expectedDigest = p.expected(name, a)
	}
	if a, found := content.Attributes["digest"]; found {
		if s, ok := p.stringAttr(a); ok {
			if d, err := digest.Parse(s); err != nil {
				p.errorf(a.Expr.Range(), "image %q: digest %q is malformed (want sha256: and 64 hex digits): %v", name, s, err)
			} else {
				img.Digest = d.String()
			}
		}
	}
	if expectedDigest != "" {
		switch {
		case img.Digest == "":
			img.Digest = expectedDigest
		case img.Digest != expectedDigest:
			p.errorf(expectedRange, "image %q: expected names digest %s but digest is %s", name, expectedDigest, img.Digest)
		}
	}
	if a, found := content.Attributes["sources"]; found {
		img.Sources = p.sources(name, a, img.Expected, img.Digest)
	}
	if expectedDigest != "" && len(img.Sources) > 0 {
		p.warnf(expectedRange, "image %q: expected names a digest: its sources can serve it only on Docker's containerd image store (the default since Docker 29); on the classic store it is pulled from its own repository only", name)
	}
	if a, found := content.Attributes["platform"]; found {
		if s, ok := p.stringAttr(a); ok {
			if norm, err := normalizePlatform(s); err != nil {
				p.errorf(a.Expr.Range(), "image %q: platform %q: %v", name, s, err)
			} else {
				img.Platform = norm
			}
		}
	}
	return img, len(p.errs) == before && img.Expected != ""
}

// expected reads image name's expected reference, normalised, and the
// digest it names if it is a digest reference.
func (p *parser) expected(name string, a *hcl.Attribute) (ref, dgst string) {
	s, ok := p.stringAttr(a)
	if !ok {
		return "", ""
	}
	named, err := reference.ParseNormalizedNamed(s)
	switch {
	case err != nil:
		p.errorf(a.Expr.Range(), "image %q: expected %q is not a valid image reference: %v", name, s, err)
	case isDigested(named) && isTagged(named):
		// Docker would pull it, then fail to tag it, at every try.
		tagged, _, _ := strings.Cut(s, "@")
		p.errorf(a.Expr.Range(), "image %q: expected %q names both a tag and a digest, and Docker cannot tag an image with such a reference, so it would never be present: write expected = %q with digest = %q",
			name, s, tagged, named.(reference.Digested).Digest().String())
	case isDigested(named):
		return named.String(), named.(reference.Digested).Digest().String()
	default:
		named = reference.TagNameOnly(named)
		if named.(reference.Tagged).Tag() == "latest" {
			p.warnf(a.Expr.Range(), "image %q: expected %q has no tag or the tag latest: Nomad's docker driver pulls :latest on every start, so prefetching it does not help", name, s)
		}
		return named.String(), ""
	}
	return "", ""
}

// sources reads image name's sources, normalised, refusing one that is
// expected itself, one listed twice, and one naming another digest than
// dgst. A bundle source ("bundle:/path") is checked as a file path, and
// its errors point at the element itself.
func (p *parser) sources(name string, a *hcl.Attribute, expected, dgst string) []string {
	srcs, _ := p.stringListAttr(a)
	var out []string
	seen := map[string]bool{}
	for i, s := range srcs {
		if strings.HasPrefix(s, BundlePrefix) {
			norm, err := bundleSource(s)
			switch {
			case err != nil:
				p.errorf(elementRange(a, i), "image %q: source %q: %v", name, s, err)
			case seen[norm]:
				p.errorf(elementRange(a, i), "image %q: source %q is listed twice", name, s)
			default:
				seen[norm] = true
				out = append(out, norm)
			}
			continue
		}
		ref, err := reference.ParseNormalizedNamed(s)
		if err != nil {
			p.errorf(a.Expr.Range(), "image %q: source %q is not a valid image reference: %v", name, s, err)
			continue
		}
		if isDigested(ref) && dgst != "" && ref.(reference.Digested).Digest().String() != dgst {
			p.errorf(a.Expr.Range(), "image %q: source %q names a digest other than digest %s", name, s, dgst)
			continue
		}
		if d, ok := ref.(reference.Digested); ok {
			// A pull by digest ignores a tag, and a reference with both is
			// one Docker may not inspect: keep repo@digest.
			ref, _ = reference.WithDigest(reference.TrimNamed(ref), d.Digest())
		} else {
			ref = reference.TagNameOnly(ref)
		}
		norm := ref.String()
		switch {
		case norm == expected:
			p.errorf(a.Expr.Range(), "image %q: source %q is the expected reference itself", name, s)
		case seen[norm]:
			p.errorf(a.Expr.Range(), "image %q: source %q is listed twice", name, s)
		default:
			seen[norm] = true
			out = append(out, norm)
		}
	}
	return out
}

func isDigested(ref reference.Named) bool {
	_, ok := ref.(reference.Digested)
	return ok
}

func isTagged(ref reference.Named) bool {
	t, ok := ref.(reference.Tagged)
	return ok && t.Tag() != ""
}

func (p *parser) auth(b *hcl.Block) (Auth, bool) {
	before := len(p.errs)
	host := b.Labels[0]
	a := Auth{Host: host, Pos: p.pos(b.DefRange)}
	if norm, err := NormalizeHost(host); err != nil {
		p.errorf(b.LabelRanges[0], "auth %q: %v", host, err)
	} else {
		a.Host = norm
	}
	content, ds := b.Body.Content(authSchema)
	p.diags(ds)
	if attr, found := content.Attributes["username"]; found {
		a.Username = p.nonEmptyString(attr, "auth "+strconv.Quote(host))
	}
	fileAttr, hasFile := content.Attributes["password_file"]
	envAttr, hasEnv := content.Attributes["password_env"]
	switch {
	case hasFile && hasEnv:
		p.errorf(envAttr.NameRange, "auth %q: set password_file or password_env, not both", host)
	case !hasFile && !hasEnv:
		p.errorf(b.DefRange, "auth %q: needs password_file or password_env", host)
	case hasFile:
		a.PasswordFile = p.nonEmptyString(fileAttr, "auth "+strconv.Quote(host))
	case hasEnv:
		a.PasswordEnv = p.nonEmptyString(envAttr, "auth "+strconv.Quote(host))
	}
	return a, len(p.errs) == before
}

func (p *parser) nonEmptyString(a *hcl.Attribute, owner string) string {
	s, ok := p.stringAttr(a)
	if ok && s == "" {
		p.errorf(a.Expr.Range(), "%s: %s must not be empty", owner, a.Name)
	}
	return s
}

// NormalizeHost returns the registry host as it appears in a normalised
// reference (docker.io for Docker Hub), or an error if host is not one.
func NormalizeHost(host string) (string, error) {
	switch host {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io", nil
	}
	if host == "" || strings.ContainsAny(host, "/@ ") {
		return "", errors.New("want a registry host such as ghcr.io or registry.example.com:5000")
	}
	ref, err := reference.ParseNormalizedNamed(host + "/x")
	if err != nil || reference.Domain(ref) != host {
		return "", errors.New("want a registry host such as ghcr.io or registry.example.com:5000")
	}
	return host, nil
}

// value evaluates an attribute with no variables or functions available and
// converts it to want. Problems are recorded; ok is false if there was one.
func (p *parser) value(a *hcl.Attribute, want cty.Type, what string) (cty.Value, bool) {
	if r, ok := literal(a.Expr, 0); !ok {
		p.errorf(r, "%s: only literal values are allowed here (strings, numbers, bools, and lists and maps of them), not expressions, templates or for loops", a.Name)
		return cty.NilVal, false
	}
	v, ds := a.Expr.Value(nil)
	if p.diags(ds) {
		return cty.NilVal, false
	}
	if v.IsNull() {
		p.errorf(a.Expr.Range(), "%s must not be null", a.Name)
		return cty.NilVal, false
	}
	cv, err := convert.Convert(v, want)
	if err != nil || !sameKind(v.Type(), want) {
		p.errorf(a.Expr.Range(), "%s must be %s, got %s", a.Name, what, v.Type().FriendlyName())
		return cty.NilVal, false
	}
	return cv, true
}

// maxNesting bounds how deep lists and maps may nest in a config value.
const maxNesting = 16

// literal reports whether e is a literal value: a string without
// interpolation or directives, a number (negative too), a bool, null, or a
// list or map of those, nested at most maxNesting deep. Anything else (a
// for expression, a function call, a conditional, a reference) is refused
// before it is evaluated: a few hundred bytes of nested for expressions can
// take minutes to evaluate, and the config may come from a KV store others
// write. When it is not, the range is the offending part's.
func literal(e hcl.Expression, depth int) (hcl.Range, bool) {
	if depth > maxNesting {
		return e.Range(), false
	}
	switch e := e.(type) {
	case *hclsyntax.LiteralValueExpr:
		return hcl.Range{}, true
	case *hclsyntax.TemplateExpr:
		for _, part := range e.Parts {
			if _, ok := part.(*hclsyntax.LiteralValueExpr); !ok {
				return part.Range(), false
			}
		}
		return hcl.Range{}, true
	case *hclsyntax.UnaryOpExpr:
		if _, ok := e.Val.(*hclsyntax.LiteralValueExpr); ok && e.Op == hclsyntax.OpNegate {
			return hcl.Range{}, true
		}
	case *hclsyntax.ParenthesesExpr:
		return literal(e.Expression, depth+1)
	case *hclsyntax.TupleConsExpr:
		for _, x := range e.Exprs {
			if r, ok := literal(x, depth+1); !ok {
				return r, false
			}
		}
		return hcl.Range{}, true
	case *hclsyntax.ObjectConsExpr:
		for _, item := range e.Items {
			k, ok := item.KeyExpr.(*hclsyntax.ObjectConsKeyExpr)
			if !ok {
				return item.KeyExpr.Range(), false
			}
			if k.ForceNonLiteral {
				return k.Range(), false
			}
			// A bare word is the key's name; anything else must be a literal.
			if _, bare := k.Wrapped.(*hclsyntax.ScopeTraversalExpr); !bare || len(k.Wrapped.(*hclsyntax.ScopeTraversalExpr).Traversal) != 1 {
				if r, ok := literal(k.Wrapped, depth+1); !ok {
					return r, false
				}
			}
			if r, ok := literal(item.ValueExpr, depth+1); !ok {
				return r, false
			}
		}
		return hcl.Range{}, true
	}
	return e.Range(), false
}

// sameKind refuses HCL's silent conversions between primitive types: in a
// config, `expected = 1` or `concurrency = "2"` is a mistake, not a request.
func sameKind(got, want cty.Type) bool {
	switch {
	case want.IsPrimitiveType():
		return got == want
	case want.IsListType() && (got.IsListType() || got.IsTupleType()):
		if got.IsListType() {
			return sameKind(got.ElementType(), want.ElementType())
		}
		for _, et := range got.TupleElementTypes() {
			if !sameKind(et, want.ElementType()) {
				return false
			}
		}
		return true
	}
	return false
}

func (p *parser) stringAttr(a *hcl.Attribute) (string, bool) {
	v, ok := p.value(a, cty.String, "a string")
	if !ok {
		return "", false
	}
	return v.AsString(), true
}

func (p *parser) stringListAttr(a *hcl.Attribute) ([]string, bool) {
	v, ok := p.value(a, cty.List(cty.String), "a list of strings")
	if !ok {
		return nil, false
	}
	var out []string
	for _, e := range v.AsValueSlice() {
		if e.IsNull() {
			p.errorf(a.Expr.Range(), "%s must not contain null", a.Name)
			return nil, false
		}
		out = append(out, e.AsString())
	}
	return out, true
}

func (p *parser) boolAttr(a *hcl.Attribute) (bool, bool) {
	v, ok := p.value(a, cty.Bool, "true or false")
	if !ok {
		return false, false
	}
	return v.True(), true
}

func (p *parser) intAttr(a *hcl.Attribute) (int, bool) {
	v, ok := p.value(a, cty.Number, "a whole number")
	if !ok {
		return 0, false
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() {
		p.errorf(a.Expr.Range(), "%s must be a whole number, got %s", a.Name, bf.Text('g', 10))
		return 0, false
	}
	n, acc := bf.Int64()
	if acc != big.Exact || n > 1<<31 || n < -(1<<31) {
		p.errorf(a.Expr.Range(), "%s is out of range", a.Name)
		return 0, false
	}
	return int(n), true
}

// durationAttr returns the attribute's text and the duration it says.
func (p *parser) durationAttr(a *hcl.Attribute) (string, time.Duration, bool) {
	s, ok := p.stringAttr(a)
	if !ok {
		return "", 0, false
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		p.errorf(a.Expr.Range(), "%s %q is not a duration (want e.g. \"90s\" or \"10m\")", a.Name, s)
		return "", 0, false
	}
	if d <= 0 {
		p.errorf(a.Expr.Range(), "%s must be positive, got %q", a.Name, s)
		return "", 0, false
	}
	return s, d, true
}

// shortDuration writes d as an operator would: 1h, 168h, 1m, 100ms, not
// 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
