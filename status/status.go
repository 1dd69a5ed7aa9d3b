// Package status owns what `prefetch run` tells the outside world about its
// state: the per-image snapshot served at /v1/status, /healthz and /readyz,
// the Prometheus metrics at /metrics, and the client side of `prefetch
// status`, which prints that snapshot as a table.
//
// The agent's loop owns the state and publishes a Snapshot after every
// change; this package only reads it, so a slow scrape never holds the loop.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"
)

// The states an image can be in.
const (
	Wanted  = "wanted"  // not (yet) checked, or due for a check
	Pulling = "pulling" // a fetch is in flight
	Present = "present" // expected is present locally
	Failed  = "failed"  // the last attempt failed and expected is not present
)

// Image is one image's state.
type Image struct {
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
	// FailingSince is when the current run of failures began.
	FailingSince *time.Time `json:"failing_since,omitempty"`
}

// Snapshot is the agent's whole state at one moment.
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
	Images          []Image    `json:"images"`
}

// Ready reports whether Nomad could start every image's job on this node
// now: the Docker daemon answers and every image is present. When not, why
// says so in a line.
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
	if missing := s.Missing(); len(missing) > 0 {
		return false, fmt.Sprintf("%d image(s) missing", len(missing))
	}
	return true, "every image is present"
}

// Missing returns the images that are not present locally: the ones a Nomad
// job could not start with now.
func (s Snapshot) Missing() []Image {
	var out []Image
	for _, img := range s.Images {
		if img.ImageID == "" {
			out = append(out, img)
		}
	}
	return out
}

// Fetch reads the snapshot of the agent listening on addr (host:port or a
// URL).
func Fetch(ctx context.Context, addr string) (Snapshot, error) {
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url = strings.TrimSuffix(url, "/") + "/v1/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Snapshot{}, fmt.Errorf("asking %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Snapshot{}, fmt.Errorf("asking the agent (is prefetch run listening there? see its -listen): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return Snapshot{}, fmt.Errorf("asking %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var s Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return Snapshot{}, fmt.Errorf("reading %s: %w", url, err)
	}
	return s, nil
}

// WriteTable prints s for a person.
func WriteTable(w io.Writer, s Snapshot, now time.Time) error {
	fmt.Fprintf(w, "config %s, loaded %s ago\n", s.Config, now.Sub(s.ConfigLoaded).Round(time.Second))
	if s.ConfigError != "" {
		fmt.Fprintf(w, "the file on disk is not in use:\n  %s\n", strings.ReplaceAll(s.ConfigError, "\n", "\n  "))
	}
	if s.DockerError != "" {
		_, why := s.Ready()
		fmt.Fprintf(w, "NOT READY: %s\n(the states below are the last known)\n", why)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tSTATE\tEXPECTED\tFROM\tIMAGE ID\tATTEMPTS\tNEXT RETRY")
	for _, img := range s.Images {
		from := "-"
		if img.ImageID != "" {
			from = "expected"
			if img.Source != "" {
				from = img.Source
			}
		}
		id := "-"
		if img.ImageID != "" {
			id = strings.TrimPrefix(img.ImageID, "sha256:")
			id = id[:min(len(id), 12)]
		}
		next := "-"
		if img.NextRetry != nil {
			next = "in " + img.NextRetry.Sub(now).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", img.Name, img.State, img.Expected, from, id, img.Attempts, next)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, img := range s.Images {
		if img.LastError != "" {
			fmt.Fprintf(w, "\n%s: %s\n", img.Name, strings.ReplaceAll(img.LastError, "\n", "\n  "))
		}
	}
	return nil
}
