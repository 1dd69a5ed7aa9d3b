package nomad

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// These tests are of the Client's HTTP plumbing (which token goes where, how
// much of an answer is read), so a plain handler stands in for Nomad: what
// it answers is not a Nomad behaviour any test relies on.

// tokenServer answers /v1/status/leader and records the token of each
// request.
type tokenServer struct {
	*httptest.Server
	mu     sync.Mutex
	tokens []string
}

func (s *tokenServer) handler(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.tokens = append(s.tokens, r.Header.Get("X-Nomad-Token"))
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `"127.0.0.1:4647"`)
}

func (s *tokenServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.tokens...)
}

func newTokenServer(t *testing.T, ln net.Listener) *tokenServer {
	t.Helper()
	s := &tokenServer{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.handler))
	if ln != nil {
		s.Listener.Close()
		s.Listener = ln
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func leader(t *testing.T, c *Client) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out string
	_, err := c.API().Raw().Query("/v1/status/leader", &out, Query(ctx, nil))
	return Err(err)
}

func TestClientRereadsTheTokenFile(t *testing.T) {
	srv := newTokenServer(t, nil)
	file := filepath.Join(t.TempDir(), "nomad_token")
	if err := os.WriteFile(file, []byte("first\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(&api.Config{Address: srv.URL}, TokenFromEnvOrFile(file))
	if err != nil {
		t.Fatal(err)
	}
	_ = leader(t, c)
	// Nomad rewrites the file when a workload identity rotates.
	if err := os.WriteFile(file, []byte("second\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = leader(t, c)
	if got := srv.seen(); len(got) != 2 || got[0] != "first" || got[1] != "second" {
		t.Errorf("tokens sent %q, want [first second]", got)
	}

	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	err = leader(t, c)
	if err == nil || !strings.Contains(err.Error(), "reading token file") {
		t.Errorf("with the token file gone: %v, want an error reading it", err)
	}
	if n := len(srv.seen()); n != 2 {
		t.Errorf("%d requests, want none sent without the token", n)
	}
}

func TestClientSendsNoTokenToAnotherHost(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("127.0.0.2 not usable here: %v", err)
	}
	other := newTokenServer(t, ln)
	var mu sync.Mutex
	var nomadTokens []string
	nomad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		nomadTokens = append(nomadTokens, r.Header.Get("X-Nomad-Token"))
		mu.Unlock()
		if r.URL.Query().Get("hop") == "" {
			// A same-host redirect first, then one to another host.
			http.Redirect(w, r, r.URL.Path+"?hop=1", http.StatusTemporaryRedirect)
			return
		}
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(nomad.Close)
	c, err := NewClient(&api.Config{Address: nomad.URL}, func() (string, error) { return "secret", nil })
	if err != nil {
		t.Fatal(err)
	}
	err = leader(t, c)
	var re *RedirectError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want a RedirectError", err)
	}
	if !strings.Contains(re.To, "127.0.0.2") {
		t.Errorf("RedirectError.To = %q, want the other host", re.To)
	}
	if got := other.seen(); len(got) != 0 {
		t.Errorf("the other host got %d requests (tokens %q), want none", len(got), got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(nomadTokens) != 2 || nomadTokens[0] != "secret" || nomadTokens[1] != "secret" {
		t.Errorf("Nomad's host got tokens %q, want the token on the request and on the same-host redirect", nomadTokens)
	}
}

func TestClientAddresses(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	viaSocket := newTokenServer(t, uln)
	viaTCP := newTokenServer(t, nil)
	for _, tt := range []struct {
		name, addr string
		srv        *tokenServer
	}{
		{"unix socket (the task API)", "unix://" + sock, viaSocket},
		{"no scheme", strings.TrimPrefix(viaTCP.URL, "http://"), viaTCP},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(&api.Config{Address: tt.addr}, func() (string, error) { return "tok", nil })
			if err != nil {
				t.Fatal(err)
			}
			before := len(tt.srv.seen())
			if err := leader(t, c); err != nil {
				t.Fatal(err)
			}
			got := tt.srv.seen()
			if len(got) != before+1 || got[len(got)-1] != "tok" {
				t.Errorf("tokens %q, want the token on the one request", got)
			}
		})
	}

	for _, tt := range []struct{ addr, want string }{
		{"ftp://127.0.0.1:4646", "scheme must be http, https or unix"},
		{"unix://", "needs the socket's path"},
		{"http://user:hunter2@127.0.0.1:%zz", "parsing Nomad address"},
	} {
		_, err := NewClient(&api.Config{Address: tt.addr}, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.addr, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error shows the password: %v", tt.addr, err)
		}
	}
	c, err := NewClient(&api.Config{Address: "https://s3cr3t@nomad.example:4646"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Address(); strings.Contains(got, "s3cr3t") {
		t.Errorf("Address() = %q shows the user information", got)
	}
}

func TestClientBoundsAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = io.WriteString(w, strings.Repeat("e", 64<<10))
			return
		}
		// A JSON string longer than MaxAnswer.
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `"`)
		chunk := strings.Repeat("a", 1<<20)
		for range MaxAnswer>>20 + 1 {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
		_, _ = io.WriteString(w, `"`)
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(&api.Config{Address: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out string
	_, err = c.API().Raw().Query("/v1/status/leader", &out, Query(ctx, nil))
	if !errors.Is(err, ErrAnswerTooLarge) {
		t.Errorf("an answer past MaxAnswer: got %v, want ErrAnswerTooLarge", err)
	}

	_, err = c.API().Raw().Query("/v1/status/leader", &out, Query(ctx, &api.QueryOptions{Params: map[string]string{"fail": "1"}}))
	var he *HTTPError
	if !errors.As(Err(err), &he) || he.Status != http.StatusInternalServerError {
		t.Fatalf("got %v, want an HTTPError 500", err)
	}
	if len(he.Body) > maxErrorBody {
		t.Errorf("the error's body is %d bytes, want at most %d", len(he.Body), maxErrorBody)
	}
}
