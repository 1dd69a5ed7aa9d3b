package daemon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/metrics"
	"github.com/nomad-prefetch/nomad-prefetch/status"
)

const testToken = "0123456789abcdef0123456789abcdef"

func endpoints() status.Endpoints {
	s := agent.Snapshot{Config: "c.hcl", ConfigLoaded: time.Now(), Images: []agent.ImageStatus{{Name: "web", Expected: "reg:5000/team-x/web:1", State: agent.StateWanted}}}
	snap := func() agent.Snapshot { return s }
	return status.Endpoints{Snapshot: snap, Alive: func() bool { return true }, Metrics: metrics.New(snap).Handler()}
}

func code(t *testing.T, url, token string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// reachAs classifies every address as r.
func reachAs(r reach) func(net.Addr) reach { return func(net.Addr) reach { return r } }

// What each address serves, with and without the token. Only loopback
// addresses can be bound here, so -listen's is taken for a node's address
// (isLoopback says it is not loopback) and -local-listen's for loopback.
func TestServeSplitsPublicAndLocal(t *testing.T) {
	t.Parallel()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := status.OpenToken(tokenFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		token *status.Token
		// want: the status code of path on public, without and with the
		// token; the local listener always serves everything.
		want map[string][2]int
	}{
		{"no token file", nil, map[string][2]int{"/healthz": {200, 200}, "/readyz": {503, 503}, "/metrics": {403, 403}, "/v1/status": {403, 403}}},
		{"token file", tok, map[string][2]int{"/healthz": {200, 200}, "/readyz": {503, 503}, "/metrics": {401, 200}, "/v1/status": {401, 200}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := options(t, "")
			local := freeAddr(t)
			o.LocalListen = local
			reachOf := func(a net.Addr) reach {
				if a.String() == local {
					return reachLocal
				}
				return reachOthers
			}
			stop, err := serve(o, endpoints(), tc.token, reachOf)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			for path, want := range tc.want {
				for i, token := range []string{"", testToken} {
					if got := code(t, "http://"+o.Listen+path, token); got != want[i] {
						t.Errorf("public %s (token %v): %d, want %d", path, token != "", got, want[i])
					}
					wantLocal := 200
					if path == "/readyz" {
						wantLocal = 503
					}
					if got := code(t, "http://"+local+path, token); got != wantLocal {
						t.Errorf("local %s (token %v): %d, want %d", path, token != "", got, wantLocal)
					}
				}
			}
		})
	}
}

// A -listen on loopback serves everything itself and opens no
// -local-listen; a -local-listen that is not loopback is refused.
func TestServeLoopbackListen(t *testing.T) {
	t.Parallel()
	o := options(t, "")
	o.LocalListen = freeAddr(t)
	stop, err := serve(o, endpoints(), nil, reachAs(reachLocal))
	if err != nil {
		t.Fatal(err)
	}
	if got := code(t, "http://"+o.Listen+"/v1/status", ""); got != 200 {
		t.Errorf("loopback -listen /v1/status: %d, want 200", got)
	}
	if got := code(t, "http://"+o.LocalListen+"/healthz", ""); got != 0 {
		t.Errorf("-local-listen answered %d beside a loopback -listen, want nothing listening", got)
	}
	stop()

	o = options(t, "")
	o.LocalListen = freeAddr(t)
	_, err = serve(o, endpoints(), nil, reachAs(reachOthers))
	var usage *UsageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("-local-listen not on loopback: %v, want a UsageError", err)
	}
	if got := code(t, "http://"+o.Listen+"/healthz", ""); got != 0 {
		t.Errorf("-listen still answers %d after the refusal", got)
	}
}

// A -listen on every interface (0.0.0.0:9105, :9105) serves everything to
// connections that arrive on loopback and opens no -local-listen (which
// could not be bound on the same port); others get the public endpoints.
func TestServeEveryInterface(t *testing.T) {
	t.Parallel()
	o := options(t, "")
	o.LocalListen = freeAddr(t)
	stop, err := serve(o, endpoints(), nil, reachAs(reachAny))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if got := code(t, "http://"+o.Listen+"/v1/status", ""); got != 200 {
		t.Errorf("/v1/status from loopback on an every-interface -listen: %d, want 200", got)
	}
	if got := code(t, "http://"+o.LocalListen+"/healthz", ""); got != 0 {
		t.Errorf("-local-listen answered %d beside an every-interface -listen, want nothing listening", got)
	}

	h := byLocalAddr(endpoints().Local(), endpoints().Public(nil))
	for _, tc := range []struct {
		local string
		want  int
	}{{"127.0.0.1:9105", 200}, {"[::1]:9105", 200}, {"10.0.0.5:9105", 403}, {"[fd00::5]:9105", 403}} {
		addr, err := net.ResolveTCPAddr("tcp", tc.local)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodGet, "/v1/status", nil)
		req = req.WithContext(context.WithValue(req.Context(), http.LocalAddrContextKey, addr))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("/v1/status on a connection to %s: %d, want %d", tc.local, rec.Code, tc.want)
		}
	}
}

// An unusable -status-token-file stops the agent at start, naming it.
func TestRunRefusesBadTokenFile(t *testing.T) {
	t.Parallel()
	o := options(t, noDocker(t))
	o.StatusTokenFile = filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(o.StatusTokenFile, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var usage *UsageError
	var te *status.TokenError
	if err := Run(t.Context(), o); !errors.As(err, &usage) || !errors.As(err, &te) || !strings.Contains(err.Error(), o.StatusTokenFile) {
		t.Errorf("got %v, want a UsageError naming the token file", err)
	}
}

// The servers' timeouts are set, and they close what a client leaves
// hanging: an idle keep-alive connection, headers never finished, an
// answer never read.
func TestServerTimeouts(t *testing.T) {
	t.Parallel()
	srv := newServer(http.NotFoundHandler(), defaultTimeouts)
	if srv.ReadHeaderTimeout <= 0 || srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes <= 0 {
		t.Errorf("the status server's bounds: %+v, want every timeout and MaxHeaderBytes set", defaultTimeouts)
	}

	short := timeouts{readHeader: 100 * time.Millisecond, read: 200 * time.Millisecond, write: 200 * time.Millisecond, idle: 100 * time.Millisecond}
	wrote := make(chan error, 1)
	h := http.NewServeMux()
	h.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	h.HandleFunc("/flood", func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(h, short)
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })

	// closed reads c until the server closes it, or fails after 10s.
	closed := func(what string, c net.Conn) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: the server kept the connection open for 10s", what)
		}
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}

	idle := dial()
	io.WriteString(idle, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	closed("an idle keep-alive connection", idle)

	half := dial()
	io.WriteString(half, "GET /ok HTTP/1.1\r\nHost: x\r\n")
	closed("headers never finished", half)

	slow := dial()
	io.WriteString(slow, "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n")
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		t.Error("an answer never read held its handler for 10s")
	}
}
