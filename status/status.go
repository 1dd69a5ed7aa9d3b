// Package status owns prefetch run's status endpoints, both ends of them:
// the server (/healthz, /readyz, /v1/status, and /metrics mounted from the
// metrics package) and the client that reads /v1/status, as `prefetch
// status` does. It reads the agent's Snapshot and must not be imported by
// the agent: the loop publishes a snapshot after every change and this
// package only reads it, so a slow scrape never holds the loop.
package status

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

// Fetch reads the snapshot of the agent listening on addr (host:port or a
// URL).
func Fetch(ctx context.Context, addr string) (agent.Snapshot, error) {
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url = strings.TrimSuffix(url, "/") + "/v1/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return agent.Snapshot{}, fmt.Errorf("asking %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return agent.Snapshot{}, fmt.Errorf("asking the agent (is prefetch run listening there? see its -listen): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return agent.Snapshot{}, fmt.Errorf("asking %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	var s agent.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return agent.Snapshot{}, fmt.Errorf("reading %s: %w", url, err)
	}
	return s, nil
}
