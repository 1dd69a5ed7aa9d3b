package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
)

// relayLatency measures JobRegistered → the first registry request for the
// job's new image on an agent that follows the relay, against an agent
// following Nomad directly, in one run. The relay is a second agent that
// keeps no image itself (exclude = ["*"]), so every registry request comes
// from the agent measured.
func relayLatency(ctx context.Context, e *env, out io.Writer) error {
	o := e.o
	refs, err := e.seed(ctx, "relay", 2*o.samples, 64<<10, 128<<10, false)
	if err != nil {
		return err
	}
	srv, err := e.fakeNomadWith(nomadtest.Options{BufferSize: 100, MinLockTTL: time.Second, DefaultLockTTL: time.Second, DefaultLockDelay: time.Second, ManagementToken: "management"})
	if err != nil {
		return err
	}
	defer srv.Close()
	dir := filepath.Join(e.dir, "relay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	write := func(name, text string) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, []byte(text), 0o600)
	}

	// Direct.
	cfg, err := write("direct.hcl", e.nomadConfig(srv.URL, ""))
	if err != nil {
		return err
	}
	a, _, err := e.startAgentLock(ctx, cfg, filepath.Join(dir, "direct.lock"))
	if err != nil {
		return err
	}
	direct, err := e.sampleJobUpdates(ctx, srv, "direct", refs[:o.samples])
	a.stop()
	if err != nil {
		return err
	}

	// Relayed: the relay first, then the agent measured.
	relayCfg := func(name, exclude string) (string, error) {
		id, err := write(name+".jwt", srv.IssueIdentity(nomadtest.Identity{Name: "relay", Audience: []string{config.DefaultRelayAudience}, TTL: time.Hour}))
		if err != nil {
			return "", err
		}
		return write(name+".hcl", e.configText(nil, fmt.Sprintf("resync_interval = \"1h\"\nnomad {\n  address = %q\n  infra_image = \"\"\n%s  relay {\n    identity_file = %q\n    lock_ttl = \"1s\"\n  }\n}\n", srv.URL, exclude, id)))
	}
	hc, err := relayCfg("holder", "  exclude = [\"*\"]\n")
	if err != nil {
		return err
	}
	h, _, err := e.startAgentLock(ctx, hc, filepath.Join(dir, "holder.lock"))
	if err != nil {
		return err
	}
	defer h.stop()
	if err := waitRelay(ctx, h.listen, func(r agent.RelayStatus) bool { return r.Self }); err != nil {
		return fmt.Errorf("the relay: %w", err)
	}
	fc, err := relayCfg("follower", "")
	if err != nil {
		return err
	}
	f, _, err := e.startAgentLock(ctx, fc, filepath.Join(dir, "follower.lock"))
	if err != nil {
		return err
	}
	defer f.stop()
	if err := waitRelay(ctx, f.listen, func(r agent.RelayStatus) bool { return r.Source == agent.SourceRelay && !r.Self }); err != nil {
		return fmt.Errorf("the follower: %w", err)
	}
	relayed, err := e.sampleJobUpdates(ctx, srv, "relayed", refs[o.samples:])
	if err != nil {
		return err
	}

	fmt.Fprintf(out, "\n### Job update to first registry request, relayed (the relay)\n\n")
	fmt.Fprintf(out, "As *Job update to first registry request (discovery)*, in one run: `prefetch run` following the fake Nomad (ACLs on) directly, "+
		"then an agent following the relay, a second `prefetch run` elected through the lock that keeps no image itself (`exclude = [\"*\"]`), so that every "+
		"registry request is the measured agent's. %d samples each; nearest-rank percentiles.\n\n", o.samples)
	fmt.Fprintf(out, "| | samples | p50 | p95 | max | min |\n| --- | --- | --- | --- | --- | --- |\n")
	fmt.Fprintf(out, "| direct | %d | %s | %s | %s | %s |\n", len(direct), ms(pct(direct, 50)), ms(pct(direct, 95)), ms(pct(direct, 100)), ms(pct(direct, 0)))
	fmt.Fprintf(out, "| relayed | %d | %s | %s | %s | %s |\n", len(relayed), ms(pct(relayed, 50)), ms(pct(relayed, 95)), ms(pct(relayed, 100)), ms(pct(relayed, 0)))
	fmt.Fprintf(out, "\nGoal: relayed within 50 ms of direct at p50 and p95: %s (p50 %+d ms, p95 %+d ms).\n",
		verdict(pct(relayed, 50)-pct(direct, 50) < 50*time.Millisecond && pct(relayed, 95)-pct(direct, 95) < 50*time.Millisecond),
		(pct(relayed, 50) - pct(direct, 50)).Milliseconds(), (pct(relayed, 95) - pct(direct, 95)).Milliseconds())
	return nil
}

// waitRelay waits, up to a minute, until the agent at listen reports a
// relay status ok takes.
func waitRelay(ctx context.Context, listen string, ok func(agent.RelayStatus) bool) error {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
		if s, got := agentStatus(listen); got && s.Nomad.Relay != nil && ok(*s.Nomad.Relay) {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("no such relay status within a minute (%s)", listen)
}
