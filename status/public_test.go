package status

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/metrics"
)

const (
	tokenA = "0123456789abcdef0123456789abcdef"
	tokenB = "fedcba9876543210fedcba9876543210"
)

func writeToken(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// inventory is a snapshot whose every string names something of the
// cluster's: none of it may reach an unauthenticated caller.
func inventory(now time.Time) agent.Snapshot {
	s := sample(now)
	s.Images = append(s.Images, agent.ImageStatus{
		Name: "secret-job-img", Expected: "reg:5000/team-x/billing:7", State: agent.StateFailed,
		Origin: agent.OriginNomad, UsedBy: []string{"team-x/billing/api/web"}, LastError: "manifest unknown",
	})
	return s
}

type endpoint struct {
	t   *testing.T
	url string
}

func (e endpoint) get(path, auth string) (int, http.Header, string) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func serveEndpoints(t *testing.T, snap func() agent.Snapshot, h func(Endpoints) http.Handler) endpoint {
	t.Helper()
	m := metrics.New(snap)
	srv := httptest.NewServer(h(Endpoints{Snapshot: snap, Alive: func() bool { return true }, Metrics: m.Handler()}))
	t.Cleanup(srv.Close)
	return endpoint{t, srv.URL}
}

// leaks says which of the inventory's names body holds.
func leaks(body string) []string {
	var out []string
	for _, s := range []string{"secret-job-img", "team-x", "billing", "reg:5000", "web", "db", "c.hcl"} {
		if strings.Contains(body, s) {
			out = append(out, s)
		}
	}
	return out
}

// The public listener without a token file: the checks' endpoints, and
// neither the inventory nor a /readyz naming any of it.
func TestPublicWithoutToken(t *testing.T) {
	t.Parallel()
	s := inventory(time.Now())
	e := serveEndpoints(t, func() agent.Snapshot { return s }, func(e Endpoints) http.Handler { return e.Public(nil) })
	if code, _, body := e.get("/healthz", ""); code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok", code, body)
	}
	code, _, body := e.get("/readyz", "")
	if code != http.StatusServiceUnavailable || body != "not ready: 2 image(s) missing\n" {
		t.Errorf("/readyz: %d %q, want 503 counting the missing images, naming none", code, body)
	}
	for _, path := range []string{"/metrics", "/v1/status"} {
		for _, auth := range []string{"", "Bearer " + tokenA} {
			code, _, body := e.get(path, auth)
			if code != http.StatusForbidden || !strings.Contains(body, "-local-listen") || len(leaks(body)) > 0 {
				t.Errorf("%s (auth %q): %d %q, want 403 pointing at the loopback listener", path, auth, code, body)
			}
		}
	}
}

// The public listener with a token file: the inventory to the token only,
// read again at every request (a rotation takes effect at once), and
// nothing when the file goes away.
func TestPublicWithToken(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "token")
	writeToken(t, path, tokenA+"\n")
	var logs bytes.Buffer
	tok, err := OpenToken(path, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s := inventory(time.Now())
	e := serveEndpoints(t, func() agent.Snapshot { return s }, func(e Endpoints) http.Handler { return e.Public(tok) })

	for _, path := range []string{"/metrics", "/v1/status"} {
		for _, auth := range []string{"", "Bearer", "Bearer " + tokenB, "Basic " + tokenA, tokenA, "Bearer " + tokenA[:20], "Bearer " + tokenA + "x"} {
			code, h, body := e.get(path, auth)
			if code != http.StatusUnauthorized || h.Get("WWW-Authenticate") == "" || len(leaks(body)) > 0 {
				t.Errorf("%s with %q: %d %q, want 401 with WWW-Authenticate and nothing of the inventory", path, auth, code, body)
			}
		}
	}
	if code, _, body := e.get("/v1/status", "Bearer "+tokenA); code != http.StatusOK || !strings.Contains(body, "team-x/billing/api/web") {
		t.Errorf("/v1/status with the token: %d %q, want 200 with the snapshot", code, body)
	}
	if code, _, body := e.get("/metrics", "bearer "+tokenA); code != http.StatusOK || !strings.Contains(body, "prefetch_images{") {
		t.Errorf("/metrics with the token (scheme in lower case): %d, want 200 with the metrics\n%s", code, body)
	}
	if code, _, body := e.get("/readyz", "Bearer "+tokenA); code != http.StatusServiceUnavailable || !strings.Contains(body, "secret-job-img reg:5000/team-x/billing:7 failed") {
		t.Errorf("/readyz with the token: %d %q, want the missing images listed", code, body)
	}
	if code, _, body := e.get("/readyz", "Bearer "+tokenB); code != http.StatusServiceUnavailable || len(leaks(body)) > 0 {
		t.Errorf("/readyz with a wrong token: %d %q, want the coarse answer", code, body)
	}

	// Rotation: the new token at once, the old one no more.
	writeToken(t, path, tokenB)
	if code, _, _ := e.get("/v1/status", "Bearer "+tokenA); code != http.StatusUnauthorized {
		t.Errorf("the old token after rotation: %d, want 401", code)
	}
	if code, _, _ := e.get("/v1/status", "Bearer "+tokenB); code != http.StatusOK {
		t.Errorf("the new token after rotation: %d, want 200", code)
	}

	// Gone, or emptied: nothing is allowed, and the log says why once.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if code, _, _ := e.get("/v1/status", "Bearer "+tokenB); code != http.StatusUnauthorized {
			t.Errorf("with the token file gone: %d, want 401", code)
		}
	}
	if n := strings.Count(logs.String(), "can't be used"); n != 1 {
		t.Errorf("the log says %d times that the file can't be used, want once:\n%s", n, logs.String())
	}
	writeToken(t, path, "")
	if code, _, _ := e.get("/v1/status", "Bearer "); code != http.StatusUnauthorized {
		t.Errorf("an empty token against an empty file: %d, want 401", code)
	}
}

// /readyz to anyone says why in words that name no image, path or error.
func TestCoarseReadyz(t *testing.T) {
	t.Parallel()
	down := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		snap agent.Snapshot
		want string
	}{
		{"starting", agent.Snapshot{}, "not ready: starting: no config applied yet\n"},
		{"docker", func() agent.Snapshot {
			s := inventory(time.Now())
			s.DockerError, s.DockerDownSince = "dial unix /srv/team-x/docker.sock: refused", &down
			return s
		}(), "not ready: Docker unreachable since 2026-01-02T03:04:05Z\n"},
		{"discovering", func() agent.Snapshot {
			s := inventory(time.Now())
			s.Nomad = &agent.DiscoveryStatus{Error: "namespace team-x: 403 Permission denied"}
			return s
		}(), "not ready: discovering: listing Nomad's jobs\n"},
		{"ready", agent.Snapshot{ConfigLoaded: time.Now(), Images: []agent.ImageStatus{{Name: "web", Expected: "reg:5000/web:1", ImageID: "sha256:1"}}}, "ready: every image is present\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := serveEndpoints(t, func() agent.Snapshot { return tc.snap }, func(e Endpoints) http.Handler { return e.Public(nil) })
			if _, _, body := e.get("/readyz", ""); body != tc.want {
				t.Errorf("/readyz: %q, want %q", body, tc.want)
			}
		})
	}
}

func TestReadToken(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want, err string
	}{
		{"newline", tokenA + "\n", tokenA, ""},
		{"spaces", "  " + tokenA + "\r\n", tokenA, ""},
		{"empty", "\n", "", "empty"},
		{"short", "abc", "", "want at least 16"},
		{"two", tokenA + " " + tokenB, "", "no space"},
		{"control", tokenA + "\x1b" + tokenB, "", "printable ASCII"},
		{"long", strings.Repeat("a", maxTokenLen+1), "", "longer than"},
	} {
		path := filepath.Join(dir, tc.name)
		writeToken(t, path, tc.content)
		got, err := ReadToken(path)
		var te *TokenError
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		case tc.err != "" && (!errors.As(err, &te) || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), path)):
			t.Errorf("%s: got %v, want a TokenError naming the file and %q", tc.name, err, tc.err)
		}
	}
	var te *TokenError
	if _, err := OpenToken(filepath.Join(dir, "missing"), nil); !errors.As(err, &te) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenToken of a missing file: %v, want a TokenError wrapping ErrNotExist", err)
	}
}

// Fetch sends the token, follows no redirect (so the token reaches no
// other host), says what a 401 needs, and reads a bounded answer.
func TestFetchToken(t *testing.T) {
	t.Parallel()
	var got atomic.Value
	agentSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer "+tokenA {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"config":"c.hcl","images":[]}`))
	}))
	defer agentSrv.Close()
	if _, err := Fetch(context.Background(), agentSrv.URL, tokenA); err != nil || got.Load() != "Bearer "+tokenA {
		t.Errorf("with the token: %v, the agent got %q", err, got.Load())
	}
	if _, err := Fetch(context.Background(), agentSrv.URL, ""); err == nil || !strings.Contains(err.Error(), "-token-file") || got.Load() != "" {
		t.Errorf("without: %v (the agent got %q), want a 401 pointing at -token-file", err, got.Load())
	}

	var leaked atomic.Int64
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		w.Write([]byte(`{"images":[]}`))
	}))
	defer other.Close()
	target := strings.Replace(other.URL, "127.0.0.1", "127.0.0.2", 1)
	for _, to := range []string{target, other.URL} { // another host, and the same host's other port
		redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, to+r.URL.Path, http.StatusFound)
		}))
		if _, err := Fetch(context.Background(), redirector.URL, tokenA); err == nil || !strings.Contains(err.Error(), "not followed") {
			t.Errorf("redirected to %s: %v, want the redirect refused", to, err)
		}
		redirector.Close()
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("the redirect's target was asked with the token %d times", n)
	}

	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"config":"`))
		for range MaxStatus/1024 + 1 {
			w.Write(bytes.Repeat([]byte("a"), 1024))
		}
		w.Write([]byte(`"}`))
	}))
	defer huge.Close()
	if _, err := Fetch(context.Background(), huge.URL, ""); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("an answer over %d bytes: %v, want it refused", MaxStatus, err)
	}
}
