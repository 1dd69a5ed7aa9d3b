package main

// The Job events relay (nomad relay block, issue #19), end to end: ten
// agents in this process, each with its own listener, lock file, Nomad
// token and relay identity, against the fake Nomad and the real dockerd
// and registries.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/halock"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

const relayLock = "nomad/jobs/prefetch/relay"

// relayIdentity is the prefetch job's identity named relay, as the fake
// Nomad signs it.
func relayIdentity(t *testing.T, srv *nomadtest.Server) string {
	t.Helper()
	return srv.IssueIdentity(nomadtest.Identity{Name: "relay", Audience: []string{config.DefaultRelayAudience}, TTL: time.Hour})
}

// forgedIdentity is a relay identity signed by a key Nomad never served.
func forgedIdentity(t *testing.T) string {
	t.Helper()
	k := nomadtest.Key(5)
	return nomadtest.SignIdentity(k, jose.RS256, nomadtest.KeyID(k), nomadtest.Identity{Name: "relay", Audience: []string{config.DefaultRelayAudience}})
}

// relayCluster is the fake Nomad with short locks (Nomad's minimum TTL is
// 10 s: a failover would take most of a minute).
func relayCluster(t *testing.T) *nomadtest.Server {
	t.Helper()
	return fakeClusterWith(t, nomadtest.Options{
		MinLockTTL: 500 * time.Millisecond, DefaultLockTTL: time.Second, DefaultLockDelay: time.Second,
		Heartbeat: time.Second, // a subscription its client closed is seen closed at the next write
		// ACLs on: the agents' tokens read no lock, as Nomad's workload
		// identities don't.
		ManagementToken: "management",
	})
}

// relayAgent starts agent i with the relay on: its Nomad token is
// "agent-i", its relay identity the one the fake issues for the prefetch
// job.
func relayAgent(t *testing.T, srv *nomadtest.Server, i int, identity string) *agentProc {
	t.Helper()
	cfgPath := relayConfig(t, srv, i, identity, "3s")
	return startAgent(t, cfgPath, filepath.Join(filepath.Dir(cfgPath), "lock"))
}

// relayConfig writes agent i's config (its Nomad token "agent-i", its relay
// identity, the relay's fallback_after) in a directory of its own and
// returns the config's path.
func relayConfig(t *testing.T, srv *nomadtest.Server, i int, identity, fallback string) string {
	t.Helper()
	dir := t.TempDir()
	tokenFile, idFile := filepath.Join(dir, "nomad_token"), filepath.Join(dir, "nomad_relay.jwt")
	for f, v := range map[string]string{tokenFile: fmt.Sprintf("agent-%d", i), idFile: identity} {
		if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := daemonSettings() + fmt.Sprintf(`
nomad {
  address     = %q
  token_file  = %q
  infra_image = ""
  relay {
    identity_file  = %q
    lock_ttl       = "1s"
    fallback_after = %q
  }
}
`, srv.URL, tokenFile, idFile, fallback)
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return cfgPath
}

// relayOf is the agent's relay status ("" source before discovery runs).
func relayOf(t *testing.T, a *agentProc) agent.RelayStatus {
	s := a.status(t)
	if s.Nomad == nil || s.Nomad.Relay == nil {
		return agent.RelayStatus{}
	}
	return *s.Nomad.Relay
}

// streamTokens counts the subscriptions to Nomad by token, from index on.
func streamTokens(srv *nomadtest.Server, from int) map[string]int {
	out := map[string]int{}
	for _, r := range srv.Requests()[from:] {
		out[r.Token]++
	}
	return out
}

// relayHolds says whether every agent of as holds ref and follows the
// relay.
func relayHolds(t *testing.T, as []*agentProc, ref string) bool {
	for _, a := range as {
		if a.images(t)[ref].State != agent.StatePresent || relayOf(t, a).Source != agent.SourceRelay {
			return false
		}
	}
	return true
}

func TestRelayOneSubscriptionPerCluster(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	reg, rp := startProxied(t, "relay-cluster")
	ids := []string{seed(t, reg.Addr+"/app:1", "relay-app-1"), seed(t, reg.Addr+"/app:2", "relay-app-2"), seed(t, reg.Addr+"/app:3", "relay-app-3")}
	t.Cleanup(func() { _ = bed.Remove(ctx, ids...) })
	exp := func(repo string) string { return rp.Addr + "/" + repo }
	srv := relayCluster(t)
	srv.RegisterJob(webJob(t, "web", exp("app:1"), exp("app:1")))

	const n = 10
	var agents []*agentProc
	for i := range n {
		agents = append(agents, relayAgent(t, srv, i, relayIdentity(t, srv)))
	}
	have := func(as []*agentProc, ref string) func() bool { return func() bool { return relayHolds(t, as, ref) } }
	waitFor(t, "every agent to follow the relay and hold app:1", 60*time.Second, have(agents, exp("app:1")))

	holder := -1
	for i, a := range agents {
		if relayOf(t, a).Self {
			if holder >= 0 {
				t.Fatalf("agents %d and %d both say they hold the relay", holder, i)
			}
			holder = i
		}
	}
	if holder < 0 {
		t.Fatal("no agent says it holds the relay")
	}
	if _, out, _ := runCLI(t, "status", "-addr", agents[(holder+1)%n].addr); !strings.Contains(out, "relay: Job events from the relay at "+agents[holder].addr) {
		t.Errorf("prefetch status of a follower does not name the relay:\n%s", out)
	}
	if got := streamTokens(srv, 0); len(got) != 1 || got[fmt.Sprintf("agent-%d", holder)] == 0 {
		t.Errorf("subscriptions to Nomad by token: %v, want agent-%d's alone", got, holder)
	}
	if c := srv.Conns(); c != 1 {
		t.Errorf("open subscriptions to Nomad: %d, want 1 for %d agents", c, n)
	}

	// A job update reaches every agent through the relay.
	before := srv.StreamBytes()
	srv.RegisterJob(webJob(t, "web", exp("app:2"), exp("app:1")))
	waitFor(t, "every agent to hold app:2", 60*time.Second, have(agents, exp("app:2")))
	t.Logf("Nomad served %d bytes of the stream for one job update to %d agents", srv.StreamBytes()-before, n)

	// The holder dies without letting go: its Nomad requests hang from
	// now on (its renewals, its release), the lock lapses, another agent
	// takes it, and a job registered meanwhile reaches every other agent.
	old := fmt.Sprintf("agent-%d", holder)
	mark := len(srv.Requests())
	srv.Partition(old)
	srv.LapseLock(relayLock)
	srv.RegisterJob(webJob(t, "web", exp("app:3"), exp("app:1")))
	rest := append(append([]*agentProc(nil), agents[:holder]...), agents[holder+1:]...)
	waitFor(t, "every other agent to hold app:3 through a new relay", 90*time.Second, have(rest, exp("app:3")))
	newHolder := ""
	for _, a := range rest {
		if r := relayOf(t, a); r.Self {
			newHolder = r.Holder
		}
	}
	if newHolder == "" || newHolder == agents[holder].addr {
		t.Errorf("the relay did not move: new holder %q, old %s", newHolder, agents[holder].addr)
	}
	if got := streamTokens(srv, mark); len(got) != 1 {
		t.Errorf("subscriptions to Nomad since the failover, by token: %v, want the new holder's alone", got)
	}
	srv.Heal(old)

	// Nobody else subscribes: no identity, or a forged one, or the relay
	// identity of an allocation Nomad has stopped (Nomad refuses it at once).
	stopped := srv.IssueIdentity(nomadtest.Identity{AllocationID: "0c6f1b9e-7d42-4a55-9e0e-3f2b8a1d5c77", Name: "relay", Audience: []string{config.DefaultRelayAudience}, TTL: time.Hour})
	srv.StopAllocation("0c6f1b9e-7d42-4a55-9e0e-3f2b8a1d5c77")
	for name, token := range map[string]string{
		"no identity": "", "a forged identity": forgedIdentity(t), "a stopped allocation's identity": stopped,
		"another job's identity":           srv.IssueIdentity(nomadtest.Identity{JobID: "web", Name: "relay", Audience: []string{config.DefaultRelayAudience}}),
		"the job's default identity":       srv.IssueIdentity(nomadtest.Identity{}),
		"an identity of another namespace": srv.IssueIdentity(nomadtest.Identity{Namespace: "other", Name: "relay", Audience: []string{config.DefaultRelayAudience}}),
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+newHolder+"/v1/event/stream?topic=Job&namespace=*", nil)
		if token != "" {
			req.Header.Set("X-Nomad-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden { // as Nomad answers a missing or bad token
			t.Errorf("%s: the relay answered %d, want 403", name, resp.StatusCode)
		}
	}
	if s := agents[holder].stderr.String(); !strings.Contains(s, "relay: lost the lock") {
		t.Logf("the old holder's log does not say it lost the lock")
	}
}

// A lock that names a relay nobody serves: the agents follow Nomad
// directly after fallback_after (and still get a job registered then);
// once the lock is free, one of them becomes the relay and they all go
// back to it.
func TestRelayFallsBackToNomad(t *testing.T) {
	testbed.Need(t, bed)
	t.Parallel() // it mostly waits out the zombie's lock
	ctx := context.Background()
	reg, rp := startProxied(t, "relay-fallback")
	ids := []string{seed(t, reg.Addr+"/app:1", "relay-fb-1"), seed(t, reg.Addr+"/app:2", "relay-fb-2")}
	t.Cleanup(func() { _ = bed.Remove(ctx, ids...) })
	exp := func(repo string) string { return rp.Addr + "/" + repo }
	srv := relayCluster(t)
	srv.RegisterJob(webJob(t, "web", exp("app:1"), exp("app:1")))

	// A holder that keeps the lock but serves nothing.
	client, err := nomad.NewClient(&api.Config{Address: srv.URL}, func() (string, error) { return "zombie", nil })
	if err != nil {
		t.Fatal(err)
	}
	lock, err := client.VarLock(relayLock, "")
	if err != nil {
		t.Fatal(err)
	}
	zctx, stopZombie := context.WithCancel(ctx)
	defer stopZombie()
	zombie := &halock.Contender{Lock: lock, TTL: time.Second, LockDelay: time.Second,
		Items: func(map[string]string) map[string]string { return map[string]string{"address": "127.0.0.1:1"} }}
	ls, err := zombie.Acquire(zctx)
	if err != nil || ls == nil {
		t.Fatalf("the zombie's acquire: %v", err)
	}
	kept := make(chan struct{})
	go func() { defer close(kept); ls.Keep(zctx) }()

	agents := []*agentProc{relayAgent(t, srv, 0, relayIdentity(t, srv)), relayAgent(t, srv, 1, relayIdentity(t, srv))}
	source := func(want string, ref string) func() bool {
		return func() bool {
			for _, a := range agents {
				r := relayOf(t, a)
				if a.images(t)[ref].State != agent.StatePresent || r.Source != want || want == agent.SourceNomad && r.Holder != "127.0.0.1:1" {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, "both agents to follow Nomad directly, with app:1", 60*time.Second, source(agent.SourceNomad, exp("app:1")))
	for _, a := range agents {
		if got := a.metric(t, "prefetch_nomad_stream_source", "source", "nomad", "self", "false"); got != 1 {
			t.Errorf("prefetch_nomad_stream_source{source=nomad}: %v, want 1", got)
		}
		if !strings.Contains(a.stderr.String(), "following Nomad directly until a relay answers") {
			t.Error("the fallback was not logged")
		}
	}
	srv.RegisterJob(webJob(t, "web", exp("app:2"), exp("app:1")))
	waitFor(t, "both agents to hold app:2 from Nomad directly", 60*time.Second, source(agent.SourceNomad, exp("app:2")))

	// The zombie lets go: an agent takes the lock, both follow it again.
	stopZombie()
	<-kept
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := lock.Release(rctx, ls.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both agents to follow the relay again", 60*time.Second, source(agent.SourceRelay, exp("app:2")))
	waitFor(t, "one subscription to Nomad again", 30*time.Second, func() bool { return srv.Conns() == 1 })
}

// Ten real agent processes hold one subscription to Nomad between them;
// the holder killed with SIGKILL (no release, no last word), the lock
// lapses, another of them takes it, and a job registered just after the
// kill reaches every surviving agent through the new relay, still with one
// subscription to Nomad.
func TestRelayHolderProcessKilled(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	reg, rp := startProxied(t, "relay-kill")
	ids := []string{seed(t, reg.Addr+"/app:1", "relay-kill-1"), seed(t, reg.Addr+"/app:2", "relay-kill-2")}
	t.Cleanup(func() { _ = bed.Remove(ctx, ids...) })
	exp := func(repo string) string { return rp.Addr + "/" + repo }
	srv := relayCluster(t)
	srv.RegisterJob(webJob(t, "web", exp("app:1"), exp("app:1")))

	bin := filepath.Join(t.TempDir(), "prefetch")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	type proc struct {
		*agentProc
		cmd *exec.Cmd
	}
	const n = 10
	var procs []proc
	for i := range n {
		// A dead holder's lock lapses about 3 s after the kill here (two 1 s
		// TTLs and a lock delay): fallback_after outlasts it, as the
		// default outlasts Nomad's, so that nobody follows Nomad meanwhile.
		cfgPath := relayConfig(t, srv, i, relayIdentity(t, srv), "15s")
		a := &agentProc{addr: testbed.FreeAddr(t), stderr: &testbed.Buffer{}}
		cmd := exec.Command(bin, "run", "-config", cfgPath, "-listen", a.addr, "-lock-file", filepath.Join(filepath.Dir(cfgPath), "lock"), "-log-level", "debug")
		cmd.Stderr = a.stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Errorf("agent %d did not stop within 30s of SIGTERM", i)
			}
			if t.Failed() {
				t.Logf("agent %d stderr:\n%s", i, a.stderr)
			}
		})
		procs = append(procs, proc{a, cmd})
		waitFor(t, "agent process to serve /healthz", 20*time.Second, func() bool {
			code, _ := a.get("/healthz")
			return code == http.StatusOK
		})
	}
	have := func(ps []proc, ref string) func() bool {
		as := make([]*agentProc, len(ps))
		for i, p := range ps {
			as[i] = p.agentProc
		}
		return func() bool { return relayHolds(t, as, ref) }
	}
	waitFor(t, "every agent process to follow the relay and hold app:1", 60*time.Second, have(procs, exp("app:1")))
	holder := -1
	for i, p := range procs {
		if relayOf(t, p.agentProc).Self {
			holder = i
		}
	}
	if holder < 0 {
		t.Fatal("no agent says it holds the relay")
	}
	if got := streamTokens(srv, 0); len(got) != 1 || got[fmt.Sprintf("agent-%d", holder)] == 0 {
		t.Errorf("subscriptions to Nomad by token: %v, want agent-%d's alone", got, holder)
	}
	if c := srv.Conns(); c != 1 {
		t.Errorf("open subscriptions to Nomad: %d, want 1 for %d agent processes", c, n)
	}

	mark := len(srv.Requests())
	if err := procs[holder].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = procs[holder].cmd.Wait()
	srv.RegisterJob(webJob(t, "web", exp("app:2"), exp("app:1")))
	rest := append(append([]proc(nil), procs[:holder]...), procs[holder+1:]...)
	waitFor(t, "every other agent to hold app:2 through a new relay", 90*time.Second, have(rest, exp("app:2")))
	selves := 0
	for _, p := range rest {
		r := relayOf(t, p.agentProc)
		if r.Holder == procs[holder].addr {
			t.Errorf("agent at %s still follows the killed holder", p.addr)
		}
		if r.Self {
			selves++
		}
	}
	if selves != 1 {
		t.Errorf("%d agents say they hold the relay after the kill, want 1", selves)
	}
	if got := streamTokens(srv, mark); len(got) != 1 {
		t.Errorf("subscriptions to Nomad since the kill, by token: %v, want the new holder's alone", got)
	}
	if c := srv.Conns(); c != 1 {
		t.Errorf("open subscriptions to Nomad: %d, want 1", c)
	}
}
