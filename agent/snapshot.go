package agent

import (
	"fmt"
	"time"
)

// The states an image can be in (ImageStatus.State).
const (
	StateWanted  = "wanted"  // not (yet) checked, or due for a check
	StatePulling = "pulling" // a fetch is in flight
	StatePresent = "present" // expected is present locally
	StateFailed  = "failed"  // the last attempt failed and expected is not present
)

// ImageStatus is one image's state, as the loop last published it.
type ImageStatus struct {
	Name     string `json:"name"`
	Expected string `json:"expected"`
	State    string `json:"state"`
	// ImageID is the local image expected names, when present.
	ImageID string `json:"image_id,omitempty"`
	// Source is where the present content came from: empty for expected
	// itself, else the source reference.
	Source string `json:"source,omitempty"`
	// Result is the last fetch's outcome ("pulled", "retagged", ...).
	Result string `json:"result,omitempty"`
	// Attempts counts the consecutive failed attempts.
	Attempts    int        `json:"attempts"`
	LastError   string     `json:"last_error,omitempty"`
	NextRetry   *time.Time `json:"next_retry,omitempty"`
	LastSuccess *time.Time `json:"last_success,omitempty"`
	// Origin says where the image comes from: OriginConfig (an image
	// block) or OriginNomad (a job); UsedBy, for a discovered image, the
	// namespace/job/group/task list that names it.
	Origin string   `json:"origin,omitempty"`
	UsedBy []string `json:"used_by,omitempty"`
	// FailingSince is when the current run of failures began.
	FailingSince *time.Time `json:"failing_since,omitempty"`
}

// Snapshot is the loop's whole state at one moment, published after every
// change; readers (the status endpoints, the metrics) never hold the loop.
// Its JSON is what /v1/status serves.
type Snapshot struct {
	Config string `json:"config"`
	// ConfigLoaded is when the config in use was loaded.
	ConfigLoaded time.Time `json:"config_loaded"`
	// ConfigError is why the file on disk is not the config in use, if it
	// is not.
	ConfigError string `json:"config_error,omitempty"`
	// DockerError is why the Docker daemon is unreachable, since
	// DockerDownSince; empty while it answers. What the images' states say
	// is then what was last known.
	DockerError     string     `json:"docker_error,omitempty"`
	DockerDownSince *time.Time `json:"docker_down_since,omitempty"`
	// Nomad is how discovering images from Nomad goes, while the config has
	// a nomad block.
	Nomad *DiscoveryStatus `json:"nomad,omitempty"`
	// Foreground is how the agent yields to Nomad's own pulls, while the
	// config has a nomad block.
	Foreground *ForegroundStatus `json:"foreground,omitempty"`
	Images     []ImageStatus     `json:"images"`
}

// Ready reports whether Nomad could start every image's job on this node
// now: the Docker daemon answers and every image is present (a discovered
// image that failed to fetch counts only with hold_readiness, see
// holdsReadiness). When not, why says so in a line.
func (s Snapshot) Ready() (ok bool, why string) {
	if s.ConfigLoaded.IsZero() {
		return false, "starting: no config applied yet"
	}
	if s.DockerError != "" {
		since := ""
		if s.DockerDownSince != nil {
			since = " since " + s.DockerDownSince.UTC().Format(time.RFC3339)
		}
		return false, fmt.Sprintf("Docker unreachable%s: %s", since, s.DockerError)
	}
	if s.Nomad != nil && !s.Nomad.Listed {
		// Until Nomad's jobs were listed once, the images they name are
		// unknown, hence not vouched for.
		why := "listing Nomad's jobs"
		if s.Nomad.Error != "" {
			why += ": " + s.Nomad.Error
		}
		return false, "discovering: " + why
	}
	held, failed := 0, 0
	for _, img := range s.Missing() {
		if s.holdsReadiness(img) {
			held++
		} else {
			failed++
		}
	}
	switch {
	case held > 0:
		return false, fmt.Sprintf("%d image(s) missing", held)
	case failed > 0:
		return true, fmt.Sprintf("every image is present but %d discovered image(s) that can't be fetched (they don't hold readiness: nomad hold_readiness = false)", failed)
	}
	return true, "every image is present"
}

// holdsReadiness says whether img, missing, makes Ready false: a config
// image always; a discovered one until its first fetch failed, or always
// with the nomad block's hold_readiness. Any job submitter can name an
// image that can't be pulled, and that must not hold every node's /readyz.
func (s Snapshot) holdsReadiness(img ImageStatus) bool {
	return img.Origin != OriginNomad || s.Nomad == nil || s.Nomad.HoldReadiness || img.Attempts == 0
}

// Missing returns the images that are not present locally: the ones a Nomad
// job could not start with now.
func (s Snapshot) Missing() []ImageStatus {
	var out []ImageStatus
	for _, img := range s.Images {
		if img.ImageID == "" {
			out = append(out, img)
		}
	}
	return out
}

// Observer is told what the loop does as it happens: the metrics. Its
// methods are called from the loop and must not block. Loop.Observer may be
// nil.
type Observer interface {
	// Fetched: one image's fetch ended with result (an Outcome), its content
	// from "expected", "source" or "none", after took.
	Fetched(result, from string, took time.Duration)
	// Reloaded: a config reload at at came to result: "ok", "unchanged" or
	// "failed" (the last good config kept).
	Reloaded(result string, at time.Time)
	// ImageRemoved: Docker removed an expected image.
	ImageRemoved()
	// DockerUp: whether the Docker daemon answers.
	DockerUp(up bool)
}

type nopObserver struct{}

func (nopObserver) Fetched(string, string, time.Duration) {}
func (nopObserver) Reloaded(string, time.Time)            {}
func (nopObserver) ImageRemoved()                         {}
func (nopObserver) DockerUp(bool)                         {}
