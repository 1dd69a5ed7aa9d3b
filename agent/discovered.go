package agent

import (
	"context"
	"sync"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// Origins of an image (ImageStatus.Origin).
const (
	OriginConfig = "config" // an image block of the config
	OriginNomad  = "nomad"  // discovered from Nomad's jobs
)

// Discovered is what a Discoverer found: the images of every job that can
// run on this node, as entries like the config's, and how the search goes.
type Discovered struct {
	// Images are the images to keep, one per expected reference; Name is
	// the first of UsedBy.
	Images []config.Image
	// UsedBy says, per expected reference, which namespace/job/group/task
	// name it.
	UsedBy map[string][]string
	// Status is the discovery's own state, for /v1/status and the metrics.
	Status DiscoveryStatus
}

// DiscoveryStatus is how discovering images from Nomad goes.
type DiscoveryStatus struct {
	// Node is this node's name in Nomad, once known.
	Node string `json:"node,omitempty"`
	// Jobs is how many jobs name images this node keeps; Images how many
	// images that is (the infra image included).
	Jobs   int `json:"jobs"`
	Images int `json:"images"`
	// Listed is true once every job was listed (the set is complete then).
	Listed bool `json:"listed"`
	// Index is the last Nomad index applied.
	Index uint64 `json:"index,omitempty"`
	// Live is true while the Job event stream is followed.
	Live bool `json:"live"`
	// Error is why Nomad can't be followed, since ErrorSince; the last
	// known images are kept meanwhile.
	Error      string     `json:"error,omitempty"`
	ErrorSince *time.Time `json:"error_since,omitempty"`
	// Problems are the jobs' images that can't be kept, and why (one per
	// image and job version; a job or group whose placement can't be
	// decided, an image outside the allowed prefixes), the newest last, at
	// most a few dozen.
	Problems []string `json:"problems,omitempty"`
	// MaxImages is the nomad block's max_images; LeftOut how many of the
	// images the jobs name here are not kept because of it (those of the
	// newest jobs), and LeftOutImages the first of them in that order, at
	// most a few dozen, each with a task naming it and why.
	MaxImages     int      `json:"max_images"`
	LeftOut       int      `json:"left_out"`
	LeftOutImages []string `json:"left_out_images,omitempty"`
	// HoldReadiness is the nomad block's hold_readiness: when false, a
	// discovered image whose fetch failed does not make Ready false.
	HoldReadiness bool `json:"hold_readiness"`
	// Staged is what this agent read of the staged set (prefetch stage).
	Staged StagedStatus `json:"staged"`
	// Relay is the Job stream's relay, when the nomad block turns it on.
	Relay *RelayStatus `json:"relay,omitempty"`
}

// The sources discovery follows the Job event stream from
// (RelayStatus.Source).
const (
	SourceNomad = "nomad" // Nomad itself
	SourceRelay = "relay" // the agent the relay lock names
	SourceNone  = "none"  // no relay known yet: waiting for one, up to fallback_after
)

// RelayStatus is where the Job events come from when the relay is on.
type RelayStatus struct {
	// Source is SourceRelay, SourceNomad (no relay answered for longer
	// than fallback_after) or SourceNone (none known yet).
	Source string `json:"source"`
	// Holder is the address the relay lock names; Self whether it is
	// this agent (which then follows Nomad for the others).
	Holder string `json:"holder,omitempty"`
	Self   bool   `json:"self"`
}

// StagedStatus is the staged set as this agent last read it.
type StagedStatus struct {
	// Version is the staged set's version read (its variable's
	// ModifyIndex, or the variables' index while there is none); 0 before
	// the first read. A stage waits for every agent to have read the
	// version it wrote.
	Version uint64 `json:"version"`
	// Error is why the set can't be read or is refused (its last good
	// version is kept meanwhile).
	Error string `json:"error,omitempty"`
	// Jobs are the jobs staged, as this node sees them.
	Jobs []StagedJob `json:"jobs,omitempty"`
}

// States of a staged job (StagedJob.State).
const (
	// StagedActive: its images are kept on nodes where a group can run.
	StagedActive = "staged"
	// StagedRegistered: a version of the job was registered since the
	// stage began; discovery keeps the registered version's images.
	StagedRegistered = "registered"
	// StagedExpired: its TTL passed.
	StagedExpired = "expired"
)

// StagedJob is one staged job on this node.
type StagedJob struct {
	Job     string    `json:"job"` // namespace/id
	State   string    `json:"state"`
	Expires time.Time `json:"expires"`
	// Fits is true when a group of the job can run on this node; Images
	// are then the images kept here for it (normalised), and Blocked why
	// an image it may need here is not kept (a placement this agent can't
	// decide, an image outside allowed_prefixes, ...).
	Fits    bool     `json:"fits"`
	Images  []string `json:"images,omitempty"`
	Blocked []string `json:"blocked,omitempty"`
}

// Discoverer finds images elsewhere than in the config: Nomad's jobs. Run
// runs until ctx is done with the nomad block's settings, calling found
// with every new set it finds (found never blocks); it keeps the last known
// set when Nomad can't be reached, and says so in Status.
type Discoverer interface {
	Run(ctx context.Context, settings config.Nomad, found func(Discovered))
}

// latest holds the newest value a background reporter (the discoverer, the
// foreground watcher) reported, for the loop to take when it is told; older
// ones are simply replaced.
type latest[T any] struct {
	mu     sync.Mutex
	set    *T
	notify chan struct{}
}

func newLatest[T any]() *latest[T] { return &latest[T]{notify: make(chan struct{}, 1)} }

func (l *latest[T]) put(v T) {
	l.mu.Lock()
	l.set = &v
	l.mu.Unlock()
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

func (l *latest[T]) take() (T, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.set == nil {
		var zero T
		return zero, false
	}
	v := *l.set
	l.set = nil
	return v, true
}
