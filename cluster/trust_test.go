package cluster

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const agentToken = "0123456789abcdef0123456789abcdef"

// The token goes to every agent asked, and a 401 or a 403 says what it
// takes.
func TestAskSendsToken(t *testing.T) {
	t.Parallel()
	guarded := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+agentToken {
			http.Error(w, "needs a token", http.StatusUnauthorized)
			return
		}
		answering(snap(present("a", refA)))(w, r)
	}
	tokenless := func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "/v1/status is served on loopback only", http.StatusForbidden)
	}
	agents := []Agent{{Node: "guarded", Address: serveAgent(t, guarded)}, {Node: "tokenless", Address: serveAgent(t, tokenless)}}
	for _, tc := range []struct {
		token, guarded, tokenless string
	}{
		{agentToken, "", "only with -status-token-file"},
		{"", "give the agents' token with -token-file", "only with -status-token-file"},
		{"fedcba9876543210fedcba9876543210", "is not this agent's", "only with -status-token-file"},
	} {
		reports := Ask(context.Background(), agents, AskOptions{Timeout: 5 * time.Second, Token: tc.token})
		for i, want := range []string{tc.guarded, tc.tokenless} {
			r := reports[i]
			switch {
			case want == "" && r.Err != nil:
				t.Errorf("%s with token %q: %v, want an answer", r.Agent.Node, tc.token, r.Err)
			case want != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), want)):
				t.Errorf("%s with token %q: %v, want an error with %q", r.Agent.Node, tc.token, r.Err, want)
			}
		}
	}
}

// An agent that redirects is not followed, to another host or its own:
// the token reaches no other address, and the redirect is not retried.
func TestAskRefusesRedirect(t *testing.T) {
	t.Parallel()
	var leaked, asked atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		answering(snap(present("a", refA)))(w, r)
	}))
	t.Cleanup(other.Close)
	targets := []string{strings.Replace(other.URL, "127.0.0.1", "127.0.0.2", 1), other.URL}
	var agents []Agent
	for _, to := range targets {
		agents = append(agents, Agent{Node: "redirects", Address: serveAgent(t, func(w http.ResponseWriter, r *http.Request) {
			asked.Add(1)
			http.Redirect(w, r, to+r.URL.Path, http.StatusTemporaryRedirect)
		})})
	}
	for _, r := range Ask(context.Background(), agents, AskOptions{Timeout: 5 * time.Second, Token: agentToken}) {
		if r.Err == nil || !strings.Contains(r.Err.Error(), "redirected to") || !strings.Contains(r.Err.Error(), "not followed") {
			t.Errorf("%s: %v, want the redirect refused", r.Agent.Address, r.Err)
		}
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("the redirect's target got the token %d times", n)
	}
	if n := asked.Load(); n != 2 {
		t.Errorf("the redirecting agents were asked %d times, want once each (a redirect is not transient)", n)
	}
}

func TestInvalidAddress(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		host string
		port int
		want string // "" valid
	}{
		{"10.0.0.5", 9105, ""},
		{"fd00::5", 9105, ""},
		{"127.0.0.1", 9105, ""}, // nomad agent -dev registers loopback
		{"node-1.example.internal", 9105, ""},
		{"10.0.0.5", 0, "is not a port"},
		{"10.0.0.5", 65536, "is not a port"},
		{"0.0.0.0", 9105, "unspecified"},
		{"::", 9105, "unspecified"},
		{"224.0.0.1", 9105, "multicast"},
		{"ff02::1", 9105, "multicast"},
		{"255.255.255.255", 9105, "broadcast"},
		{"0", 9105, "not an IP address or a host name"},
		{"127.1", 9105, "not an IP address or a host name"},
		{"0x7f.1", 9105, "not an IP address or a host name"},
		{"evil.example/x", 9105, "not an IP address or a host name"},
		{"host\x1b[2J", 9105, `"host\x1b[2J"`},
		{"", 9105, "not an IP address or a host name"},
	} {
		got := invalidAddress(tc.host, tc.port)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%q:%d: %q, want %q", tc.host, tc.port, got, tc.want)
		}
	}
}
