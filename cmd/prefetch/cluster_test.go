package main

// prefetch status -cluster and prefetch wait, end to end: real `prefetch
// run` agents on loopback ports against the test bed's dockerd and
// registry, fakes of agents that stall or are gone, and a fake of Nomad's
// (or Consul's) service catalog in its real shape listing them all.

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/catalogtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// writeConfig replaces path as a template renderer does: a temp file, then
// a rename.
func writeConfig(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// stalledAgent is an agent that accepts connections and never answers.
func stalledAgent(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// catalogFor starts a fake catalog of provider listing addrs and points
// the standard environment at it.
func catalogFor(t *testing.T, provider string, addrs ...string) *catalogtest.Catalog {
	t.Helper()
	c := catalogtest.Start(provider, "prefetch", "t0ken")
	t.Cleanup(c.Close)
	c.SetAgents(addrs...)
	if provider == catalogtest.Nomad {
		t.Setenv("NOMAD_ADDR", c.URL)
		t.Setenv("NOMAD_TOKEN", "t0ken")
	} else {
		t.Setenv("CONSUL_HTTP_ADDR", strings.TrimPrefix(c.URL, "http://"))
		t.Setenv("CONSUL_HTTP_TOKEN", "t0ken")
	}
	return c
}

// rowRE matches a matrix row: name, expected, then the cells.
func rowRE(name, expected string, cells ...string) *regexp.Regexp {
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +` + regexp.QuoteMeta(expected) + ` +` + strings.Join(cells, ` +`) + ` *$`)
}

// TestClusterView: two real agents (one whose config lacks b), a stalled
// agent and a gone one; the matrix, its JSON and its transpose; the gate
// timing out with every node still missing b and why; then b added to the
// second agent's config while the gate waits, which lets it through.
func TestClusterView(t *testing.T) {
	testbed.Need(t, bed)
	reg, _ := startProxied(t, "cluster")
	refA, refB := reg.Addr+"/cluster-a:1", reg.Addr+"/cluster-b:1"
	seed(t, refA, "cluster-a")
	seed(t, refB, "cluster-b")
	dir := t.TempDir()
	cfg1, cfg2 := filepath.Join(dir, "one.hcl"), filepath.Join(dir, "two.hcl")
	writeConfig(t, cfg1, daemonSettings()+imageBlock("a", refA)+imageBlock("b", refB))
	writeConfig(t, cfg2, daemonSettings()+imageBlock("a", refA))
	one := startAgent(t, cfg1, filepath.Join(dir, "one.lock"))
	two := startAgent(t, cfg2, filepath.Join(dir, "two.lock"))
	for _, a := range []*agentProc{one, two} {
		waitFor(t, "the agent ready", 60*time.Second, func() bool { code, _ := a.get("/readyz"); return code == http.StatusOK })
	}
	stalled, gone := stalledAgent(t), testbed.FreeAddr(t)
	// The fake numbers nodes in the order given: one is node 00000001.
	cat := catalogFor(t, catalogtest.Nomad, one.addr, two.addr, stalled, gone)

	code, stdout, stderr := runCLI(t, "status", "-cluster", "-agent-timeout", "1s")
	if code != exitFailed {
		t.Errorf("status -cluster with b missing on one node: exit %d, want %d; stderr %s", code, exitFailed, stderr)
	}
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`^4 agent\(s\) in Nomad's service "prefetch" of job default/prefetch at http://127\.0\.0\.1:\d+: 2 answered, 1 have every image\n`),
		regexp.MustCompile(`(?m)^IMAGE +EXPECTED +00000001 +00000002 +00000003 +00000004 *$`),
		rowRE("a", refA, "present", "present", "unreachable", "unreachable"),
		rowRE("b", refB, "present", "missing", "unreachable", "unreachable"),
		regexp.MustCompile(`(?m)^could not ask 2 agent\(s\):\n  00000003 ` + regexp.QuoteMeta(stalled) + `: asking http://` + regexp.QuoteMeta(stalled) + `/v1/status: no answer within 1s: .*\n  00000004 ` + regexp.QuoteMeta(gone) + `: .*connection refused`),
	} {
		if !re.MatchString(stdout) {
			t.Errorf("status -cluster: stdout does not match %s:\n%s", re, stdout)
		}
	}
	if cat.Requests() != 1 {
		t.Errorf("the catalog was asked %d times, want once", cat.Requests())
	}

	code, stdout, _ = runCLI(t, "status", "-cluster", "-by-node", "-agent-timeout", "1s")
	for _, re := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^NODE +ADDRESS +a +b *$`),
		regexp.MustCompile(`(?m)^00000002 +` + regexp.QuoteMeta(two.addr) + ` +present +missing *$`),
		regexp.MustCompile(`(?m)^00000003 +` + regexp.QuoteMeta(stalled) + ` +unreachable +unreachable *$`),
	} {
		if code != exitFailed || !re.MatchString(stdout) {
			t.Errorf("status -cluster -by-node: exit %d, stdout does not match %s:\n%s", code, re, stdout)
		}
	}

	code, stdout, _ = runCLI(t, "status", "-cluster", "-json", "-agent-timeout", "1s")
	var doc struct {
		Complete bool
		Images   []struct{ Expected, Name string }
		Nodes    []struct {
			Node, Address, Error string
			Ready                bool
			Images               map[string]string
		}
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("status -cluster -json: %v\n%s", err, stdout)
	}
	if code != exitFailed || doc.Complete || len(doc.Images) != 2 || len(doc.Nodes) != 4 || doc.Nodes[1].Images[refB] != "missing" || !doc.Nodes[1].Ready || doc.Nodes[2].Error == "" {
		t.Errorf("status -cluster -json: exit %d, got %+v", code, doc)
	}

	// The gate, for b: times out naming every node without it, and why.
	code, _, stderr = runCLI(t, "wait", "-image", refB, "-timeout", "3s", "-interval", "100ms", "-agent-timeout", "500ms")
	for _, want := range []string{
		"wait: 1/4 node(s) ready; waiting for 00000002, 00000003, 00000004\n",
		"wait: timed out after 3s waiting for " + refB + "\n3 of 4 node(s) still missing it:\n",
		"  00000002 " + two.addr + ": " + refB + " not in its config yet\n",
		"  00000003 " + stalled + ": unreachable: asking http://" + stalled + "/v1/status: no answer within 500ms",
		"  00000004 " + gone + ": unreachable: ",
	} {
		if code != exitFailed || !strings.Contains(stderr, want) {
			t.Errorf("wait with b missing: exit %d, stderr lacks %q:\n%s", code, want, stderr)
		}
	}

	// The pipeline: the gone and stalled nodes leave the catalog, b goes
	// into the second node's config while the gate waits; it lets through.
	cat.SetAgents(one.addr, two.addr)
	done := make(chan struct{})
	var waitCode int
	var waitErr string
	go func() {
		defer close(done)
		waitCode, _, waitErr = runCLI(t, "wait", "-image", refB, "-timeout", "60s", "-interval", "100ms")
	}()
	for range 2 { // the gate has asked, found b missing, and asks again
		select {
		case <-cat.Asked():
		case <-done:
			t.Fatalf("wait returned before b was added: exit %d\n%s", waitCode, waitErr)
		case <-time.After(30 * time.Second):
			t.Fatal("wait did not ask the catalog")
		}
	}
	writeConfig(t, cfg2, daemonSettings()+imageBlock("a", refA)+imageBlock("b", refB))
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("wait did not return")
	}
	if waitCode != exitOK || !strings.Contains(waitErr, "wait: ready: all 2 node(s) have "+refB+"\n") {
		t.Errorf("wait after b was added: exit %d, stderr:\n%s", waitCode, waitErr)
	}
	if code, stdout, _ := runCLI(t, "status", "-cluster"); code != exitOK || !rowRE("b", refB, "present", "present").MatchString(stdout) {
		t.Errorf("status -cluster, every node complete: exit %d\n%s", code, stdout)
	}
	// No -image: every image of each agent's own config.
	if code, _, stderr := runCLI(t, "wait", "-timeout", "30s", "-interval", "100ms"); code != exitOK {
		t.Errorf("wait for every image: exit %d\n%s", code, stderr)
	}
}

// The same view through Consul's health endpoint, node names from Consul.
func TestClusterViewConsul(t *testing.T) {
	a := serveSnapshot(t, `{"config":"c.hcl","config_loaded":"2026-01-01T00:00:00Z","images":[{"name":"a","expected":"reg:5000/a:1","state":"present","image_id":"sha256:1"}]}`)
	catalogFor(t, catalogtest.Consul, a, stalledAgent(t))
	code, stdout, stderr := runCLI(t, "status", "-cluster", "-provider", "consul", "-agent-timeout", "300ms")
	if code != exitUnasked || !rowRE("a", "reg:5000/a:1", "present", "unreachable").MatchString(stdout) || !strings.Contains(stdout, "IMAGE  EXPECTED      client-1  client-2") {
		t.Errorf("status -cluster -provider consul: exit %d (want %d: the answering agent has every image, the other could not be asked)\n%s%s", code, exitUnasked, stdout, stderr)
	}
}

func serveSnapshot(t *testing.T, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// What can go wrong before any agent is asked.
func TestClusterFailures(t *testing.T) {
	agentAddr := serveSnapshot(t, `{"config":"c.hcl","config_loaded":"2026-01-01T00:00:00Z","images":[]}`)
	cat := catalogFor(t, catalogtest.Nomad, agentAddr)

	t.Setenv("NOMAD_TOKEN", "wrong")
	code, stdout, stderr := runCLI(t, "status", "-cluster")
	if code != exitFailed || stdout != "" || !strings.Contains(stderr, "Nomad answered 403 Forbidden: Permission denied (the token in NOMAD_TOKEN is refused") || strings.Contains(stderr, "wrong") {
		t.Errorf("token refused: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut strings.Builder
	if code := run(ctx, []string{"wait", "-timeout", "50s"}, &out, &errOut); code != exitFailed || ctx.Err() != nil || !strings.Contains(errOut.String(), "NOMAD_TOKEN is refused") {
		t.Errorf("wait, token refused: exit %d after %v, stderr %q; want 1 at once", code, ctx.Err(), errOut.String())
	}
	t.Setenv("NOMAD_TOKEN", "t0ken")

	code, _, stderr = runCLI(t, "status", "-cluster", "-service", "nothing")
	if code != exitFailed || !strings.Contains(stderr, `no agent is registered in Nomad's service "nothing"`) {
		t.Errorf("no agent: exit %d, stderr %q", code, stderr)
	}

	cat.Close()
	code, _, stderr = runCLI(t, "status", "-cluster")
	if code != exitFailed || !strings.Contains(stderr, "(is Nomad there?)") || !strings.Contains(stderr, "connection refused (tried 3 times)") {
		t.Errorf("catalog down: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCLI(t, "wait", "-timeout", "1s", "-interval", "100ms")
	if code != exitFailed || !strings.Contains(stderr, "wait: catalog: asking ") || !strings.Contains(stderr, "the last look at the catalog failed") {
		t.Errorf("wait, catalog down: exit %d, stderr %q", code, stderr)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "-cluster", "-addr", "127.0.0.1:1"}, "-addr asks one agent, -cluster every agent"},
		{[]string{"status", "-by-node"}, "-by-node needs -cluster"},
		{[]string{"status", "-cluster", "-provider", "etcd"}, `provider "etcd": want nomad or consul`},
		{[]string{"status", "-cluster", "-parallel", "0"}, "-parallel 0: want 1 to 1024"},
		{[]string{"wait", "-image", "Traefik:v3"}, `invalid value "Traefik:v3" for flag -image: "Traefik:v3" is not an image reference: invalid reference format: repository name (library/Traefik) must be lowercase`},
		{[]string{"wait", "-image", "a:1@sha256:" + strings.Repeat("0", 64)}, "names both a tag and a digest"},
		{[]string{"wait", "traefik"}, `unexpected arguments ["traefik"]`},
		{[]string{"wait", "-timeout", "0s"}, "-timeout must be positive"},
	} {
		code, stdout, stderr := runCLI(t, tc.args...)
		if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, code, stdout, stderr, exitUsage, tc.want)
		}
	}
	if code, stdout, _ := runCLI(t, "wait", "-h"); code != exitOK || !strings.Contains(stdout, "prefetch wait -timeout 15m -image registry.service.consul:5000/traefik:v3.1.3") {
		t.Errorf("wait -h: exit %d\n%s", code, stdout)
	}
}
