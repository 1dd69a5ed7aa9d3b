package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/backoff"
)

// Defaults of AskOptions.
const (
	DefaultParallel = 32
	DefaultTimeout  = 5 * time.Second
	maxStatus       = 8 << 20 // bytes of an agent's /v1/status read at most
	retryPause      = 100 * time.Millisecond
)

// AskOptions bound the fan-out.
type AskOptions struct {
	// Parallel is how many agents are asked at once (DefaultParallel).
	Parallel int
	// Timeout bounds each agent, its retry included (DefaultTimeout).
	Timeout time.Duration
	// Client makes the requests; nil: NewClient(Parallel).
	Client *http.Client
	// Token, when set, is sent to every agent as "Authorization: Bearer
	// Token": the agents' -status-token-file, which /v1/status on a
	// node's address needs.
	Token string
}

// Report is one agent's answer, or why there is none.
type Report struct {
	Agent    Agent
	Snapshot agent.Snapshot // valid when Err is nil
	Err      error
}

// NewClient returns an HTTP client for asking agents: plain HTTP (the
// agents serve no TLS), no proxy (they are on the nodes' addresses), no
// redirect followed (an agent never sends one, and the token must reach
// no other address), and a pool of idle connections as large as the
// fan-out, for `wait`'s rounds.
func NewClient(parallel int) *http.Client {
	if parallel <= 0 {
		parallel = DefaultParallel
	}
	return &http.Client{CheckRedirect: refuseRedirect, Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: DefaultTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        parallel,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// Ask asks every agent for its status, o.Parallel at a time, and returns
// one report per agent, in the order given. An agent the catalog reports
// down is not asked. It returns when every agent has answered or failed:
// within about len(agents)/Parallel × Timeout, or when ctx is done.
func Ask(ctx context.Context, agents []Agent, o AskOptions) []Report {
	if o.Parallel <= 0 {
		o.Parallel = DefaultParallel
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Client == nil {
		o.Client = NewClient(o.Parallel)
	}
	reports := make([]Report, len(agents))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(o.Parallel, len(agents)) {
		wg.Go(func() {
			for i := range next {
				reports[i] = askOne(ctx, o, agents[i])
			}
		})
	}
	for i := range agents {
		next <- i
	}
	close(next)
	wg.Wait()
	return reports
}

func askOne(ctx context.Context, o AskOptions, a Agent) Report {
	r := Report{Agent: a}
	switch {
	case a.Down != "":
		r.Err = errors.New(a.Down)
		return r
	case a.Invalid != "":
		r.Err = errors.New(a.Invalid)
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	url := "http://" + a.Address + "/v1/status"
	for attempt := 1; ; attempt++ {
		var retry bool
		r.Snapshot, retry, r.Err = fetchStatus(ctx, o.Client, url, o.Token, o.Timeout)
		if r.Err == nil || !retry || attempt == 2 || backoff.Sleep(ctx, retryPause) != nil {
			return r
		}
	}
}

// refuseRedirect is an agent client's CheckRedirect.
func refuseRedirect(req *http.Request, via []*http.Request) error {
	return &RedirectError{API: "the agent", From: via[0].URL.Host, To: req.URL.Host}
}

// fetchStatus makes one request; retry says whether another may help.
// limit is the agent's timeout, for messages.
func fetchStatus(ctx context.Context, c *http.Client, url, token string, limit time.Duration) (s agent.Snapshot, retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, false, fmt.Errorf("asking %s: %w", url, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		err = netError(err, limit)
		return s, transientNet(err), fmt.Errorf("asking %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		err := fmt.Errorf("asking %s: answered %s: %q", url, resp.Status, strings.TrimSpace(string(body)))
		switch {
		case resp.StatusCode == http.StatusUnauthorized && token == "":
			err = fmt.Errorf("%w (give the agents' token with -token-file)", err)
		case resp.StatusCode == http.StatusUnauthorized:
			err = fmt.Errorf("%w (the token of -token-file is not this agent's)", err)
		case resp.StatusCode == http.StatusForbidden:
			err = fmt.Errorf("%w (the agent serves its status on the node's address only with -status-token-file)", err)
		}
		return s, resp.StatusCode >= 500, err
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxStatus)).Decode(&s); err != nil {
		return s, false, fmt.Errorf("asking %s: the answer is not an agent's status: %w", url, netError(err, limit))
	}
	return s, false, nil
}

// transientNet reports whether a failed request may succeed at once if
// tried again: a refused or reset connection (an agent restarting), not a
// deadline, which has spent the agent's time.
func transientNet(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
