package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Docker is the subset of the Docker Engine the agent uses.
// *registry.Engine implements it.
type Docker interface {
	// Inspect returns the local image ref names, or an error wrapping
	// registry.ErrNotFound.
	Inspect(ctx context.Context, ref string) (registry.Image, error)
	// Pull pulls ref, failing on an error inside the progress stream, and
	// with a *registry.StalledError when the stream stays silent for
	// opts.StallTimeout.
	Pull(ctx context.Context, ref string, opts registry.PullOptions) error
	// Tag points target at the local image source (an ID or reference).
	Tag(ctx context.Context, source, target string) error
	// ContainerdStore reports whether the daemon keeps images in
	// containerd's store (where a source can serve an image named by
	// digest), false when it can't tell.
	ContainerdStore(ctx context.Context) bool
}

var _ Docker = (*registry.Engine)(nil)

// Digester looks up the digest a tag points at in its registry, without
// pulling. *registry.Remote implements it.
type Digester interface {
	Digest(ctx context.Context, ref string) (string, error)
}

var _ Digester = (*registry.Remote)(nil)

// Outcome is what fetching one image came to.
type Outcome string

const (
	// UpToDate: expected was already present with the wanted content.
	UpToDate Outcome = "up to date"
	// Pulled: expected was pulled and changed.
	Pulled Outcome = "pulled"
	// Retagged: a source was pulled and tagged as expected.
	Retagged Outcome = "retagged"
	// Stale: nothing could be pulled, but expected is present locally.
	Stale Outcome = "present, not refreshed"
	// Copied: a peer agent served it, verified and tagged as expected.
	Copied Outcome = "copied"
	// Failed: the image is not present.
	Failed Outcome = "failed"
)

// PeerSource prefixes a Result's Source when a peer served the image:
// "peer:" and the peer's node.
const PeerSource = "peer:"

// Peers copies images from sibling agents: the nomad block's peers block.
// *discovery.Discoverer implements it.
type Peers interface {
	// Copy makes expected present from a peer (content dgst, when set, by
	// proof), verified, untagged, and returns its image ID and the peer's
	// node. Asked first (before any registry), it returns an error wrapping
	// ErrOwnFetch when this agent is the one to fetch the image from the
	// registries, its peers copying it from here.
	Copy(ctx context.Context, expected, dgst string, first bool, opts registry.ArchiveOptions) (id, node string, err error)
}

// ErrOwnFetch is Peers.Copy's answer, asked first, when this agent fetches
// the image from the registries itself.
var ErrOwnFetch = errors.New("this agent fetches the image from the registries itself")

// Result is the outcome for one image.
type Result struct {
	Image   config.Image
	Outcome Outcome
	// Source is the reference the content came from when a source served it.
	Source string
	// ImageID is the local image expected now names, if present.
	ImageID  string
	Duration time.Duration
	// Err says why it failed, or for Stale why it was not refreshed: every
	// reference tried and what went wrong.
	Err error
}

// OK reports whether the image is present for Nomad to use.
func (r Result) OK() bool { return r.Outcome != Failed }

// Summary is the outcome in words: "retagged from docker.io/library/x:1".
func (r Result) Summary() string {
	if r.Source != "" {
		return fmt.Sprintf("%s from %s", r.Outcome, r.Source)
	}
	return string(r.Outcome)
}

// Fetcher runs the per-image algorithm. Its fetches may run concurrently;
// they share what they learn of registries that stop answering.
type Fetcher struct {
	Docker Docker
	// Remote, when set, is asked for a tag's digest before it is pulled: a
	// digest the local expected image already has means there is nothing to
	// pull, and a 429 means a pull would be refused too.
	Remote Digester
	// PullTimeout bounds each pull of one reference.
	PullTimeout time.Duration
	// StallTimeout cancels a pull whose progress has been silent that long;
	// a registry lookup gets at most the shorter of it and maxLookup.
	StallTimeout time.Duration
	Log          *slog.Logger
	// FallbackLevel is the level of the line saying expected could not be
	// pulled and the sources are tried (Info; the daemon uses Debug, its
	// failures being reported with throttling instead).
	FallbackLevel slog.Level
	// Bundles serves the `bundle:` sources; without it they fail.
	Bundles Bundles
	// Offline asks no registry: only bundle sources are tried (prefetch
	// once -bundle, for a site no registry serves).
	Offline bool
	// Peers, when set, copies an image that is not present (or not the
	// content of its digest pin) from a sibling agent: before any registry
	// with PeersFirst, else once every registry failed.
	Peers      Peers
	PeersFirst bool

	shareOnce sync.Once
	sh        *shared // set by the daemon, else made on first use
}

// maxLookup bounds one registry lookup (its /v2/ ping, token and manifest
// HEAD together): a registry that takes longer to answer a HEAD is not
// answering.
const maxLookup = 30 * time.Second

func (f *Fetcher) state() *shared {
	f.shareOnce.Do(func() {
		if f.sh == nil {
			f.sh = newShared()
		}
	})
	return f.sh
}

// Fetch makes img's expected reference present locally:
//
//  1. With a digest, if expected is already tagged locally with content of
//     that digest, it is done, without touching the network.
//  2. Pull expected (by repo@digest when a digest is set). Done on success.
//  3. Else pull each source in order (by repo@digest when a digest is set,
//     so the registry proves the content) and tag the first that succeeds
//     as expected.
//  4. If every pull failed but expected is present (with the wanted digest,
//     when one is set, which step 1 rules out), it is Stale: usable, not
//     refreshed.
//  5. Else it failed; the error lists every reference tried and why.
//
// With Peers, an image that is not present (or not its pin's content) is
// asked of the peers too: before step 2 with PeersFirst (unless this agent
// is the one to fetch it from the registries), and before step 4 in any
// case.
func (f *Fetcher) Fetch(ctx context.Context, img config.Image) Result {
	start := time.Now()
	res := f.fetch(ctx, img)
	res.Image = img
	res.Duration = time.Since(start)
	return res
}

func (f *Fetcher) fetch(ctx context.Context, img config.Image) Result {
	if ctx.Err() != nil {
		return Result{Outcome: Failed, Err: context.Cause(ctx)}
	}
	log := f.Log.With("image", img.Expected)
	before, err := f.Docker.Inspect(ctx, img.Expected)
	present := err == nil
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		// The daemon itself failed: no pull would fare better.
		return Result{Outcome: Failed, Err: err}
	}
	if present && img.Digest != "" && before.HasDigest(img.Digest) {
		return Result{Outcome: UpToDate, ImageID: before.ID}
	}

	var have *registry.Image
	if present {
		have = &before
	}
	var tried []error
	askPeers := f.Peers != nil && !f.Offline && (!present || img.Digest != "")
	if askPeers && f.PeersFirst {
		if res, ok := f.fromPeers(ctx, img, true, &tried); ok {
			return res
		}
	}
	if f.Offline {
		tried = append(tried, errOffline)
	} else {
		current, id, err := f.getAndSettle(ctx, img, img.Expected, have)
		switch {
		case err == nil && current:
			return Result{Outcome: UpToDate, ImageID: before.ID}
		case err == nil:
			if present && before.ID == id {
				return Result{Outcome: UpToDate, ImageID: id}
			}
			return Result{Outcome: Pulled, ImageID: id}
		case isSettle(err):
			return Result{Outcome: Failed, Err: err}
		}
		tried = append(tried, fmt.Errorf("expected: %w", err))
		if len(img.Sources) > 0 && ctx.Err() == nil {
			log.Log(ctx, f.FallbackLevel, "expected reference not available, trying sources", "error", err.Error())
		}
	}
	if res, ok := f.fromSources(ctx, img, have, &tried); ok {
		return res
	}
	if askPeers && ctx.Err() == nil {
		if res, ok := f.fromPeers(ctx, img, false, &tried); ok {
			return res
		}
	}

	err = errors.Join(tried...)
	switch {
	case present && img.Digest == "":
		return Result{Outcome: Stale, ImageID: before.ID, Err: err}
	case present:
		return Result{Outcome: Failed, Err: fmt.Errorf("the local %s is not content %s, and no pull succeeded:\n%w", img.Expected, img.Digest, err)}
	}
	return Result{Outcome: Failed, Err: err}
}

// fromSources tries img's sources in order, registries and bundles alike
// (only bundles when Offline), and returns the first that served it; ok is
// false when none did, each failure appended to tried.
func (f *Fetcher) fromSources(ctx context.Context, img config.Image, have *registry.Image, tried *[]error) (res Result, ok bool) {
	for _, src := range img.Sources {
		if ctx.Err() != nil {
			break
		}
		var current bool
		var id string
		var err error
		path, isBundle := config.BundlePath(src)
		switch {
		case isBundle:
			id, err = f.fromBundle(ctx, img, path)
		case f.Offline:
			continue
		default:
			current, id, err = f.getAndSettle(ctx, img, src, have)
		}
		switch {
		case isSettle(err):
			return Result{Outcome: Failed, Source: src, Err: err}, true
		case err != nil:
			*tried = append(*tried, fmt.Errorf("source %s: %w", src, err))
			continue
		case current:
			return Result{Outcome: UpToDate, Source: src, ImageID: have.ID}, true
		case have != nil && have.ID == id:
			return Result{Outcome: UpToDate, Source: src, ImageID: id}, true
		}
		return Result{Outcome: Retagged, Source: src, ImageID: id}, true
	}
	return Result{}, false
}

// fromPeers asks the peers for img (first: before any registry) and tags
// the verified copy as expected; ok is false when no peer served it (the
// reason appended to tried) or this agent is to fetch it itself.
func (f *Fetcher) fromPeers(ctx context.Context, img config.Image, first bool, tried *[]error) (res Result, ok bool) {
	id, node, err := f.Peers.Copy(ctx, img.Expected, img.Digest, first, registry.ArchiveOptions{StallTimeout: f.StallTimeout, QuietTimeout: f.PullTimeout})
	switch {
	case errors.Is(err, ErrOwnFetch):
		return Result{}, false
	case err != nil:
		*tried = append(*tried, fmt.Errorf("peers: %w", err))
		return Result{}, false
	}
	src := PeerSource + node
	if _, err := f.settle(ctx, id, img.Expected); err != nil {
		return Result{Outcome: Failed, Source: src, Err: &settleError{err}}, true
	}
	return Result{Outcome: Copied, Source: src, ImageID: id}, true
}

// settleError is a failure after a pull succeeded (inspecting or tagging
// what it brought): the daemon's, not the reference's, so no other source is
// tried.
type settleError struct{ err error }

func (e *settleError) Error() string { return e.err.Error() }
func (e *settleError) Unwrap() error { return e.err }

func isSettle(err error) bool {
	var se *settleError
	return errors.As(err, &se)
}

// getAndSettle makes from (expected, or a source) present locally, pinned to
// img's digest when it has one, and makes expected name it. current is true
// when nothing had to be pulled because have already holds from's content.
// Fetches of the same reference take turns, so that a pull and the inspect
// of what it brought never interleave with another pull of that tag.
func (f *Fetcher) getAndSettle(ctx context.Context, img config.Image, from string, have *registry.Image) (current bool, id string, err error) {
	ref, err := pinned(from, img.Digest)
	if err != nil {
		return false, "", err
	}
	if from != img.Expected && strings.Contains(img.Expected, "@") && !f.containerdStore(ctx) {
		return false, "", errDigestFromSource
	}
	unlock, err := f.state().refs.lock(ctx, ref)
	if err != nil {
		return false, "", err
	}
	defer unlock()
	current, err = f.get(ctx, ref, img.Platform, have)
	if err != nil {
		if img.Digest != "" && errors.Is(err, registry.ErrPullNotFound) {
			repo, _, _ := strings.Cut(ref, "@")
			err = fmt.Errorf("no manifest with digest %s exists in %s (is the digest right, and was it pushed there?): %w", img.Digest, repo, err)
		}
		return false, "", err
	}
	if current {
		return true, "", nil
	}
	id, err = f.settle(ctx, ref, img.Expected)
	if err != nil {
		return false, "", &settleError{err}
	}
	return false, id, nil
}

// get makes ref's content present locally. While expected is present
// (have) and a Remote is set, the registry is asked for ref's digest first:
// current is true, and nothing is pulled, when have already has it; a 429 is
// returned as is, with its Retry-After (a pull would be refused too). Any
// other lookup error falls through to the pull, since the daemon may reach
// registries the agent can't (insecure-registries, mirrors, client
// certificates). With nothing local there is nothing to compare, so the pull
// goes first, and the registry is asked only when the pull was refused with
// a 429, to learn the Retry-After that dockerd's error leaves out.
func (f *Fetcher) get(ctx context.Context, ref, platform string, have *registry.Image) (current bool, err error) {
	host, err := registry.Host(ref)
	if err != nil {
		return false, err
	}
	pinned := strings.Contains(ref, "@")
	if f.Remote != nil && have != nil && !pinned {
		dgst, err := f.lookup(ctx, host, ref)
		var rl *registry.RateLimitedError
		switch {
		case errors.As(err, &rl):
			return false, err
		case err == nil && have.HasDigest(dgst):
			return true, nil
		}
	}
	err = f.pull(ctx, host, ref, platform)
	if err != nil && f.Remote != nil && !pinned && errors.Is(err, registry.ErrPullRateLimited) {
		var rl *registry.RateLimitedError
		if _, herr := f.lookup(ctx, host, ref); errors.As(herr, &rl) {
			return false, errors.Join(err, rl)
		}
	}
	return false, err
}

// lookup asks host's registry for ref's digest within the lookup deadline.
// A registry that did not answer in time is not asked again (its lookups
// fail at once) until a probe finds it answering.
func (f *Fetcher) lookup(ctx context.Context, host, ref string) (string, error) {
	u := f.state().lookups
	probe, err := u.admit(host, time.Now())
	if err != nil {
		return "", err
	}
	limit := maxLookup
	if f.StallTimeout > 0 {
		limit = min(limit, f.StallTimeout)
	}
	slow := fmt.Errorf("no answer to a manifest lookup within %s", limit)
	lctx, cancel := context.WithTimeoutCause(ctx, limit, slow)
	defer cancel()
	dgst, err := f.Remote.Digest(lctx, ref)
	o := answered
	switch {
	case err == nil:
	case ctx.Err() != nil:
		o = unknown
	case context.Cause(lctx) == slow:
		o = timedOut
	}
	if uerr := u.done(host, probe, o, slow.Error(), time.Now()); uerr != nil {
		return "", uerr
	}
	return dgst, err
}

// pull pulls ref within the per-pull timeout, whose expiry is reported as
// such rather than as "context deadline exceeded". A pull whose registry
// made no progress for the stall timeout marks that registry as not
// answering: pulls from it fail at once, with the same error, until a probe
// finds it answering again.
func (f *Fetcher) pull(ctx context.Context, host, ref, platform string) error {
	u := f.state().pulls
	probe, err := u.admit(host, time.Now())
	if err != nil {
		return err
	}
	pctx := ctx
	if f.PullTimeout > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeoutCause(ctx, f.PullTimeout, fmt.Errorf("pull_timeout of %s exceeded", f.PullTimeout))
		defer cancel()
	}
	err = f.Docker.Pull(pctx, ref, registry.PullOptions{Platform: platform, StallTimeout: f.StallTimeout})
	var stalled *registry.StalledError
	o, why := answered, ""
	switch {
	case err == nil:
	case errors.As(err, &stalled):
		o, why = timedOut, fmt.Sprintf("a pull made no progress for %s", stalled.After)
	case ctx.Err() != nil, registry.IsDaemonDown(err):
		o = unknown // cancelled, or the daemon's fault, not the registry's
	}
	if uerr := u.done(host, probe, o, why, time.Now()); uerr != nil {
		return uerr
	}
	return err
}

// pinned returns ref pinned to dgst, or ref itself when dgst is empty.
func pinned(ref, dgst string) (string, error) {
	if dgst == "" {
		return ref, nil
	}
	return registry.WithDigest(ref, dgst)
}

// settle makes expected name the image just pulled as ref, and returns its
// ID. After a plain pull of expected, there is nothing to tag. An expected
// named by a digest can't be created by tagging: the image is tagged into
// expected's repository instead, which on the containerd image store makes
// expected (repo@digest) inspect as that image, and that is checked.
func (f *Fetcher) settle(ctx context.Context, ref, expected string) (string, error) {
	im, err := f.Docker.Inspect(ctx, ref)
	if err != nil {
		return "", err
	}
	if ref == expected {
		return im.ID, nil
	}
	target := expected
	repo, dgst, byDigest := strings.Cut(expected, "@")
	if byDigest {
		target = repo + ":prefetch-" + strings.TrimPrefix(dgst, "sha256:")[:12]
	}
	if err := f.Docker.Tag(ctx, im.ID, target); err != nil {
		return "", err
	}
	if byDigest {
		got, err := f.Docker.Inspect(ctx, expected)
		if err != nil || got.ID != im.ID {
			return "", fmt.Errorf("tagged %s as %s, but %s does not name it (%v): this image store can't serve a digest-named image from a source", registry.ShortID(im.ID), target, expected, err)
		}
	}
	return im.ID, nil
}

// errDigestFromSource is why a digest-named image is pulled from its own
// repository only on the classic image store.
var errDigestFromSource = errors.New("not tried: a source can serve an image named by digest only on Docker's containerd image store (the default since Docker 29); on this daemon's classic store only a pull from its own repository names it")

func (f *Fetcher) containerdStore(ctx context.Context) bool {
	return f.Docker.ContainerdStore(ctx)
}
