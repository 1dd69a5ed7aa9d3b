// Package status owns prefetch run's status endpoints, both ends of them:
// the server (/healthz, /readyz, /v1/status, and /metrics mounted from the
// metrics package; Endpoints), the bearer token that guards the inventory
// on a public listener (Token), and the client that reads /v1/status, as
// `prefetch status` does. It reads the agent's Snapshot and must not be
// imported by the agent: the loop publishes a snapshot after every change
// and this package only reads it, so a slow scrape never holds the loop.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

// MaxStatus is how much of an agent's /v1/status is read at most.
const MaxStatus = 8 << 20

// client asks one agent. It follows no redirect (an agent never sends
// one) and uses no proxy (agents are on the nodes' addresses, as for the
// cluster view): the bearer token goes nowhere but the address asked.
var client = &http.Client{
	Transport: func() http.RoundTripper {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil
		return t
	}(),
	CheckRedirect: func(req *http.Request, via []*http.Request) error {
		return fmt.Errorf("redirected to %s: not followed (an agent does not redirect; the token goes nowhere else)", req.URL.Redacted())
	},
}

// Fetch reads the snapshot of the agent listening on addr (host:port or a
// URL), sending token as a bearer token when it is not empty.
func Fetch(ctx context.Context, addr, token string) (agent.Snapshot, error) {
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	url = strings.TrimSuffix(url, "/") + "/v1/status"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return agent.Snapshot{}, fmt.Errorf("asking %s: %w", url, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return agent.Snapshot{}, fmt.Errorf("asking the agent (is prefetch run listening there? see its -listen): %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		msg := fmt.Sprintf("asking %s: %s: %q", url, resp.Status, strings.TrimSpace(string(body)))
		switch {
		case resp.StatusCode == http.StatusUnauthorized && token == "":
			msg += " (give the agent's token with -token-file)"
		case resp.StatusCode == http.StatusUnauthorized:
			msg += " (the token of -token-file is not the agent's)"
		}
		return agent.Snapshot{}, errors.New(msg)
	}
	var s agent.Snapshot
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxStatus)).Decode(&s); err != nil {
		return agent.Snapshot{}, fmt.Errorf("reading %s (at most %d bytes): %w", url, MaxStatus, err)
	}
	return s, nil
}
