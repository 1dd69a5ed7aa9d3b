package registry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrNotFound is returned by Inspect when the image is not present locally.
var ErrNotFound = errors.New("image not present locally")

// Image is what prefetch needs to know of a local image.
type Image struct {
	ID          string
	RepoTags    []string
	RepoDigests []string // repo@sha256:... for each repository it was pulled from
	Size        int64    // bytes, as the daemon counts them
}

// HasDigest reports whether the image was pulled by, or recorded with, the
// manifest digest dgst from any repository.
func (i Image) HasDigest(dgst string) bool {
	return slices.ContainsFunc(i.RepoDigests, func(rd string) bool {
		_, d, ok := strings.Cut(rd, "@")
		return ok && d == dgst
	})
}

// Options configures an Engine.
type Options struct {
	// Host is a Docker host URL; empty means DOCKER_HOST, then the platform
	// default. DOCKER_TLS_VERIFY, DOCKER_CERT_PATH and DOCKER_API_VERSION are
	// honoured as by the docker CLI.
	Host string
	// Credentials resolves the credentials sent with each pull; nil pulls
	// anonymously.
	Credentials *Credentials
	// CallTimeout bounds every Engine call but a pull's stream (ping,
	// inspect, tag, info, the start of the event subscription): a daemon
	// that accepts the connection and never answers fails the call with a
	// *DaemonTimeoutError instead of blocking its caller. Zero means
	// DefaultCallTimeout.
	CallTimeout time.Duration
}

// DefaultCallTimeout is Options.CallTimeout's default: far longer than any
// healthy daemon takes to inspect or tag an image, short enough that an
// operator waiting on `prefetch once` is told.
const DefaultCallTimeout = 30 * time.Second

// PullOptions configures one pull.
type PullOptions struct {
	// Platform is os/arch[/variant]; empty pulls the daemon's own.
	Platform string
	// StallTimeout cancels the pull when its progress stream has been
	// silent that long (a registry that accepts and never answers, a blob
	// that stops mid-way); zero disables the watchdog.
	StallTimeout time.Duration
}

// Engine is the Docker Engine, as prefetch uses it.
type Engine struct {
	cli     *client.Client
	creds   *Credentials
	timeout time.Duration

	infoMu sync.Mutex
	info   *client.SystemInfoResult // `docker info`, read on first success (Insecure, ContainerdStore)
}

// DaemonTimeoutError says the Docker daemon accepted a call and did not
// answer it within the call timeout: a hung daemon, not a stopped one.
type DaemonTimeoutError struct {
	Host  string // the daemon's address
	Op    string // what was asked: "a ping", "an image inspect", ...
	After time.Duration
}

func (e *DaemonTimeoutError) Error() string {
	return fmt.Sprintf("the Docker daemon at %s did not answer %s within %s", e.Host, e.Op, e.After)
}

// What a failed pull was, as far as dockerd's message tells (it gives no
// code, only text, inside a stream it answered 200). A *PullError is one of
// these for errors.Is.
var (
	// ErrPullNotFound: the registry has no such manifest or repository.
	ErrPullNotFound = errors.New("the registry has no such image")
	// ErrPullRateLimited: the registry refused with its rate limit (429).
	// dockerd drops the Retry-After; the agent learns it from its own
	// manifest HEAD (a *RateLimitedError).
	ErrPullRateLimited = errors.New("the registry's rate limit")
	// ErrPullUnauthorized: the registry refused the credentials, or wants
	// some.
	ErrPullUnauthorized = errors.New("the registry refused the credentials")
)

// PullError is a pull the daemon failed, in its own words (Msg), with its
// kind (one of the ErrPull* errors, or nil when the message says nothing
// known) and the API error it came in, if it was not inside the stream.
type PullError struct {
	Msg  string
	Kind error
	err  error
}

func (e *PullError) Error() string { return e.Msg }

// Is matches the kind.
func (e *PullError) Is(target error) bool { return e.Kind != nil && target == e.Kind }

// Unwrap is the API error the message came in (nil inside the stream), so
// that IsDaemonDown still sees a daemon that could not be reached.
func (e *PullError) Unwrap() error { return e.err }

// pullKinds are the texts dockerd's messages carry for each kind (the
// registries' error codes they quote: MANIFEST_UNKNOWN is "manifest
// unknown", TOOMANYREQUESTS "toomanyrequests", UNAUTHORIZED
// "unauthorized"; the containerd image store quotes the HTTP status
// instead: "unexpected status from HEAD request to ...: 429 Too Many
// Requests"), matched in this order. "pull access denied ...,
// repository does not exist or may require 'docker login'" is left
// untyped: it can mean either.
var pullKinds = []struct {
	kind  error
	texts []string
}{
	{ErrPullRateLimited, []string{"toomanyrequests", "429 Too Many Requests"}}, // the second: the containerd store's (Docker 29.7.2)
	{ErrPullUnauthorized, []string{"unauthorized", "authentication required", "no basic auth credentials", "401 Unauthorized"}},
	{ErrPullNotFound, []string{"manifest unknown", "not found"}},
}

// pullError types a failed pull's message; err is the API error it came
// in, nil for an error inside the progress stream.
func pullError(msg string, err error) *PullError {
	if strings.Contains(msg, "could not fetch content descriptor") {
		// The containerd image store's word for a blob the registry named
		// and does not serve ("... from remote: not found"): the registry
		// lost content, as 20.10's "unknown blob" says, not a missing
		// manifest (Docker 29.7.2).
		return &PullError{Msg: msg, err: err}
	}
	for _, k := range pullKinds {
		for _, t := range k.texts {
			if strings.Contains(msg, t) {
				return &PullError{Msg: msg, Kind: k.kind, err: err}
			}
		}
	}
	return &PullError{Msg: msg, err: err}
}

// StalledError is why the watchdog cancelled a pull: its progress stream
// was silent for After.
type StalledError struct {
	After time.Duration
}

func (e *StalledError) Error() string {
	return fmt.Sprintf("no progress for %s (stall_timeout), pull cancelled", e.After)
}

// NewEngine returns an Engine for the daemon at opts.Host. It does not
// connect: the API version is negotiated on the first call, so an old daemon
// (Docker 20.10 speaks API 1.41) is talked to in its own version.
func NewEngine(opts Options) (*Engine, error) {
	clientOpts := []client.Opt{client.FromEnv}
	if opts.Host != "" {
		clientOpts = append(clientOpts, client.WithHost(opts.Host))
	}
	cli, err := client.New(clientOpts...)
	if err != nil {
		return nil, fmt.Errorf("creating Docker client: %w", err)
	}
	timeout := opts.CallTimeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	return &Engine{cli: cli, creds: opts.Credentials, timeout: timeout}, nil
}

// Host is the daemon's address, as the client dials it.
func (e *Engine) Host() string { return e.cli.DaemonHost() }

// call runs f with the call timeout. When that timeout, and not ctx, ended
// the call, the error is a *DaemonTimeoutError naming op.
func (e *Engine) call(ctx context.Context, op string, f func(context.Context) error) error {
	timedOut := &DaemonTimeoutError{Host: e.cli.DaemonHost(), Op: op, After: e.timeout}
	cctx, cancel := context.WithTimeoutCause(ctx, e.timeout, timedOut)
	defer cancel()
	err := f(cctx)
	if err != nil && ctx.Err() == nil && context.Cause(cctx) == timedOut {
		return timedOut
	}
	return err
}

// Close releases the client's idle connections.
func (e *Engine) Close() error { return e.cli.Close() }

// Ping checks that the daemon answers, and negotiates the API version.
func (e *Engine) Ping(ctx context.Context) error {
	err := e.call(ctx, "a ping", func(ctx context.Context) error {
		_, err := e.cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		return err
	})
	var timedOut *DaemonTimeoutError
	switch {
	case errors.As(err, &timedOut):
		return err // it names the daemon already
	case err != nil:
		return fmt.Errorf("reaching the Docker daemon at %s: %w", e.cli.DaemonHost(), err)
	}
	return nil
}

// Inspect returns the local image ref names (a tag, a repo@digest or an ID),
// or an error wrapping ErrNotFound.
func (e *Engine) Inspect(ctx context.Context, ref string) (Image, error) {
	var res client.ImageInspectResult
	err := e.call(ctx, "an image inspect", func(ctx context.Context) (err error) {
		res, err = e.cli.ImageInspect(ctx, ref)
		return err
	})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Image{}, fmt.Errorf("inspecting %s: %w", ref, ErrNotFound)
		}
		return Image{}, fmt.Errorf("inspecting %s: %w", ref, err)
	}
	return Image{ID: res.ID, RepoTags: res.RepoTags, RepoDigests: res.RepoDigests, Size: res.Size}, nil
}

// ImageIDs returns the IDs of every local image (intermediate ones
// included).
func (e *Engine) ImageIDs(ctx context.Context) (map[string]bool, error) {
	var res client.ImageListResult
	err := e.call(ctx, "an image list", func(ctx context.Context) (err error) {
		res, err = e.cli.ImageList(ctx, client.ImageListOptions{All: true})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listing the images: %w", err)
	}
	ids := make(map[string]bool, len(res.Items))
	for _, im := range res.Items {
		ids[im.ID] = true
	}
	return ids, nil
}

// Remove removes the local image id, never forced: Docker refuses while a
// container uses it or while more than one name refers to it, and its
// parent images are kept. It is for images the caller made itself (a
// load it then refused), never for an image it found.
func (e *Engine) Remove(ctx context.Context, id string) error {
	err := e.call(ctx, "an image remove", func(ctx context.Context) error {
		_, err := e.cli.ImageRemove(ctx, id, client.ImageRemoveOptions{})
		return err
	})
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("removing image %s: %w", ShortID(id), err)
	}
	return nil
}

// Tag points target (a repo:tag reference) at the local image source (an ID
// or a reference).
func (e *Engine) Tag(ctx context.Context, source, target string) error {
	err := e.call(ctx, "an image tag", func(ctx context.Context) error {
		_, err := e.cli.ImageTag(ctx, client.ImageTagOptions{Source: source, Target: target})
		return err
	})
	if err != nil {
		return fmt.Errorf("tagging %s as %s: %w", ShortID(source), target, err)
	}
	return nil
}

// Pull pulls ref (a tag or a repo@digest reference), for opts.Platform if it
// is not empty, with the credentials for ref's registry. It returns only when
// the daemon's progress stream has ended, and fails if the stream carried an
// error, even though the daemon answered 200. Its only bounds are ctx and the
// stall watchdog (opts.StallTimeout), which also covers a daemon or registry
// that never starts the stream: a *StalledError.
func (e *Engine) Pull(ctx context.Context, ref string, opts PullOptions) error {
	auth, err := e.creds.header(ref)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	pullOpts := client.ImagePullOptions{RegistryAuth: auth}
	if opts.Platform != "" {
		p := ocispec.Platform{}
		parts := strings.SplitN(opts.Platform, "/", 3)
		if len(parts) < 2 {
			return fmt.Errorf("pulling %s: platform %q is not os/arch[/variant]", ref, opts.Platform)
		}
		p.OS, p.Architecture = parts[0], parts[1]
		if len(parts) == 3 {
			p.Variant = parts[2]
		}
		pullOpts.Platforms = []ocispec.Platform{p}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	progress := func() {}
	if stall := opts.StallTimeout; stall > 0 {
		watchdog := time.AfterFunc(stall, func() { cancel(&StalledError{After: stall}) })
		defer watchdog.Stop()
		progress = func() { watchdog.Reset(stall) }
	}
	if err := e.pull(ctx, ref, pullOpts, progress); err != nil {
		// A cancelled pull reports "context canceled"; say why instead
		// (the watchdog, or the caller's deadline and its cause).
		if cause := context.Cause(ctx); cause != nil {
			err = cause
		}
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	return nil
}

func (e *Engine) pull(ctx context.Context, ref string, opts client.ImagePullOptions, progress func()) error {
	resp, err := e.cli.ImagePull(ctx, ref, opts)
	if err != nil {
		if ctx.Err() != nil || IsDaemonDown(err) {
			return err
		}
		return pullError(err.Error(), err)
	}
	defer resp.Close()
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return fmt.Errorf("reading the pull's progress: %w", err)
		}
		progress()
		if msg.Error != nil {
			return pullError(msg.Error.Message, nil)
		}
	}
	return ctx.Err()
}

// ShortID abbreviates an image ID for messages; references pass unchanged.
func ShortID(s string) string {
	if id, ok := strings.CutPrefix(s, "sha256:"); ok && len(id) > 12 {
		return id[:12]
	}
	return s
}

// IsDaemonDown reports whether err says the Docker daemon could not be
// reached (nothing listens, the socket is gone) or did not answer a call in
// time, as opposed to a daemon that answered with an error.
func IsDaemonDown(err error) bool {
	var timedOut *DaemonTimeoutError
	return client.IsErrConnectionFailed(err) || errors.As(err, &timedOut)
}

// ImageEvent is one image event from the daemon. On the classic image
// store (Docker 20.10 and later) untag and delete events carry only the
// image ID, never the tag; on the containerd image store (the default since
// Docker 29) an untag names the reference removed.
type ImageEvent struct {
	Action string // "untag", "delete", ...
	ID     string // the image ID, sha256:...
	// Name is the reference the event is about, when the daemon says (the
	// containerd store's untag); on the classic store it is the image ID.
	Name string
}

// ImageEvents subscribes to the daemon's untag and delete image events. It
// returns an error if the subscription can't be made (the daemon is down).
// Otherwise events carries them until the subscription ends (the daemon went
// away, or ctx is done): then events is closed and errs says why.
func (e *Engine) ImageEvents(ctx context.Context) (<-chan ImageEvent, <-chan error, error) {
	// The client's Events reports a failed request only asynchronously:
	// ask the daemon first, so a daemon that is down is an error here.
	if err := e.Ping(ctx); err != nil {
		return nil, nil, fmt.Errorf("subscribing to Docker image events: %w", err)
	}
	res := e.cli.Events(ctx, client.EventsListOptions{
		Filters: make(client.Filters).Add("type", "image").Add("event", "untag", "delete"),
	})
	out := make(chan ImageEvent)
	errs := make(chan error, 1)
	go func() {
		defer close(out)
		for {
			select {
			case m := <-res.Messages:
				select {
				case out <- ImageEvent{Action: string(m.Action), ID: m.Actor.ID, Name: m.Actor.Attributes["name"]}:
				case <-ctx.Done():
					errs <- ctx.Err()
					return
				}
			case err := <-res.Err:
				if err == nil {
					err = errors.New("the event stream ended")
				}
				errs <- fmt.Errorf("watching Docker image events: %w", err)
				return
			}
		}
	}()
	return out, errs, nil
}

// InsecureRegistries returns what the daemon's configuration says of a
// registry host: true when it is among the daemon's insecure registries (by
// name, or by an IP address within one of its insecure CIDRs, which include
// 127.0.0.0/8), where the daemon speaks plain HTTP. Remote uses it to ask
// such a registry over HTTP too, as dockerd would.
func (e *Engine) InsecureRegistries(ctx context.Context) (func(host string) bool, error) {
	info, err := e.readInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the Docker daemon's registry configuration: %w", err)
	}
	return insecureIn(info), nil
}

// insecureIn is InsecureRegistries' answer from the daemon's info.
func insecureIn(info client.SystemInfoResult) func(host string) bool {
	rc := info.Info.RegistryConfig
	if rc == nil {
		return func(string) bool { return false }
	}
	return func(host string) bool {
		if idx, ok := rc.IndexConfigs[host]; ok && idx != nil {
			return !idx.Secure
		}
		hostname := host
		if h, _, err := net.SplitHostPort(host); err == nil {
			hostname = h
		}
		ip, err := netip.ParseAddr(hostname)
		if err != nil {
			return false
		}
		for _, cidr := range rc.InsecureRegistryCIDRs {
			if cidr.Contains(ip.Unmap()) {
				return true
			}
		}
		return false
	}
}

// readInfo asks the daemon for `docker info`.
func (e *Engine) readInfo(ctx context.Context) (client.SystemInfoResult, error) {
	var info client.SystemInfoResult
	err := e.call(ctx, "an info request", func(ctx context.Context) (err error) {
		info, err = e.cli.Info(ctx, client.InfoOptions{})
		return err
	})
	return info, err
}

// daemonInfo is readInfo, read once it succeeds and kept: the registry
// configuration and the image store are the daemon's start-up settings.
func (e *Engine) daemonInfo(ctx context.Context) (client.SystemInfoResult, error) {
	e.infoMu.Lock()
	defer e.infoMu.Unlock()
	if e.info == nil {
		info, err := e.readInfo(ctx)
		if err != nil {
			return info, err
		}
		e.info = &info
	}
	return *e.info, nil
}

// ContainerdStore reports whether the daemon keeps images in containerd's
// image store (the default since Docker 29), where an image tagged into a
// repository can be inspected there by its digest; on the classic store
// only a pull records an image's repo@digest. Read from `docker info` on
// first use (and again until that succeeds); a daemon that can't be asked
// counts as classic.
func (e *Engine) ContainerdStore(ctx context.Context) bool {
	info, err := e.daemonInfo(ctx)
	if err != nil {
		return false
	}
	for _, kv := range info.Info.DriverStatus {
		if kv[0] == "driver-type" && strings.HasPrefix(kv[1], "io.containerd.snapshotter") {
			return true
		}
	}
	return false
}

// Insecure reports whether the daemon lists host as an insecure registry
// (see InsecureRegistries). The daemon's configuration is read on first use,
// and again at each use until that succeeds; a daemon that can't be asked
// lists nothing.
func (e *Engine) Insecure(host string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := e.daemonInfo(ctx)
	if err != nil {
		return false
	}
	return insecureIn(info)(host)
}
