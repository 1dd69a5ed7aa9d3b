package main

// What the cluster view and the single status take from an agent: the
// token they send, and what an agent's answer may put on the terminal.

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/catalogtest"
)

const cliToken = "0123456789abcdef0123456789abcdef"

// guardedAgent answers body only to the bearer token cliToken.
func guardedAgent(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+cliToken {
			w.Header().Set("WWW-Authenticate", `Bearer realm="prefetch"`)
			http.Error(w, "/v1/status needs Authorization: Bearer", http.StatusUnauthorized)
			return
		}
		w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

const presentA = `{"config":"c.hcl","config_loaded":"2026-01-01T00:00:00Z","images":[{"name":"a","expected":"reg:5000/a:1","state":"present","image_id":"sha256:1"}]}`

func TestTokenFile(t *testing.T) {
	tokenFile := writeFile(t, "token", cliToken+"\n")
	a := guardedAgent(t, presentA)
	catalogFor(t, catalogtest.Nomad, a)

	if code, stdout, stderr := runCLI(t, "status", "-cluster", "-token-file", tokenFile); code != exitOK || !rowRE("a", "reg:5000/a:1", "present").MatchString(stdout) {
		t.Errorf("status -cluster -token-file: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, _ := runCLI(t, "status", "-cluster"); code != exitUnasked || !strings.Contains(stdout, "401 Unauthorized") || !strings.Contains(stdout, "-token-file") {
		t.Errorf("status -cluster without the token: exit %d, want %d saying a token is needed\n%s", code, exitUnasked, stdout)
	}
	if code, _, stderr := runCLI(t, "wait", "-timeout", "30s", "-interval", "100ms", "-token-file", tokenFile); code != exitOK {
		t.Errorf("wait -token-file: exit %d\n%s", code, stderr)
	}
	if code, stdout, stderr := runCLI(t, "status", "-addr", a, "-token-file", tokenFile); code != exitOK || !strings.Contains(stdout, "reg:5000/a:1") {
		t.Errorf("status -addr -token-file: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, "status", "-addr", a); code != exitFailed || !strings.Contains(stderr, "give the agent's token with -token-file") {
		t.Errorf("status -addr without the token: exit %d, stderr %q", code, stderr)
	}
	short := writeFile(t, "short", "abc")
	for _, args := range [][]string{
		{"status", "-token-file", short},
		{"status", "-cluster", "-token-file", short},
		{"wait", "-token-file", short},
		{"status", "-cluster", "-token-file", tokenFile + ".missing"},
	} {
		if code, stdout, stderr := runCLI(t, args...); code != exitUsage || stdout != "" || !strings.Contains(stderr, "-token-file: the token file ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d naming the file", args, code, stdout, stderr, exitUsage)
		}
	}
}

// hostile is an agent's answer made to take over a terminal: escape
// sequences, a tab to shift the columns, a right-to-left override, and an
// error of 100 KB.
var hostile = `{"config":"c\u001b]0;owned\u0007.hcl","config_loaded":"2026-01-01T00:00:00Z",` +
	`"docker_error":"\u001b[2J` + strings.Repeat("D", 100<<10) + `",` +
	`"images":[{"name":"ev\til\u202e","expected":"reg:5000/x:1","state":"failed","attempts":1,` +
	`"last_error":"boom\u001b[31m\n\u009b2J` + strings.Repeat("E", 100<<10) + `"}]}`

func hasControl(s string) bool {
	return strings.ContainsAny(s, "\x1b\x07\u009b\u202e")
}

// What an agent says reaches the terminal stripped and bounded: the single
// status, the matrix and the gate's pending list.
func TestAgentAnswerOnTerminal(t *testing.T) {
	a := serveSnapshot(t, hostile)
	catalogFor(t, catalogtest.Nomad, a)
	for _, args := range [][]string{
		{"status", "-addr", a},
		{"status", "-cluster"},
		{"status", "-cluster", "-by-node"},
		{"wait", "-timeout", "300ms", "-interval", "100ms"},
	} {
		code, stdout, stderr := runCLI(t, args...)
		out := stdout + stderr
		if code != exitFailed || hasControl(out) || len(out) > 8<<10 || !strings.Contains(out, `\x1b`) {
			t.Errorf("%q: exit %d, %d bytes, control characters %v; want 1, under 8 KiB, escaped:\n%.3000q", args, code, len(out), hasControl(out), out)
		}
		if !strings.Contains(out, "more bytes cut") {
			t.Errorf("%q: the 100 KB error is not said cut:\n%.3000q", args, out)
		}
	}
	// -json is the agent's document, escaped by JSON: no raw ESC either.
	if _, stdout, _ := runCLI(t, "status", "-cluster", "-json"); strings.ContainsAny(stdout, "\x1b\x07") {
		t.Errorf("status -cluster -json holds a raw control character")
	}
}
