package cluster

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/internal/catalogtest"
)

// reports of a small cluster with one node of each kind.
func clusterReports() []Report {
	dockerDown := snap(present("a", refA))
	since := time.Now().Add(-time.Minute)
	dockerDown.DockerError, dockerDown.DockerDownSince = "dial unix /var/run/docker.sock: connect: no such file or directory", &since
	pulling := agent.ImageStatus{Name: "b", Expected: refB, State: agent.StatePulling}
	brokenConfig := snap(present("a", refA))
	brokenConfig.ConfigError = "/local/config.hcl:3:1: Unexpected }\nmore"
	return []Report{
		{Agent: Agent{Node: "complete"}, Snapshot: snap(present("a", refA), present("b", refB))},
		{Agent: Agent{Node: "pulling"}, Snapshot: snap(present("a", refA), pulling)},
		{Agent: Agent{Node: "failed"}, Snapshot: snap(present("a", refA), failed("b", refB, "manifest unknown\nsecond line"))},
		{Agent: Agent{Node: "old config"}, Snapshot: brokenConfig},
		{Agent: Agent{Node: "starting"}, Snapshot: agent.Snapshot{Config: "/local/config.hcl"}},
		{Agent: Agent{Node: "docker down"}, Snapshot: dockerDown},
		{Agent: Agent{Node: "unreachable", Address: "10.0.0.9:1"}, Err: errors.New("asking http://10.0.0.9:1/v1/status: no answer within 5s")},
	}
}

func TestMatrix(t *testing.T) {
	t.Parallel()
	m := NewMatrix(clusterReports())
	if len(m.Images) != 2 || m.Images[0] != (Image{Expected: refA, Name: "a"}) || m.Images[1] != (Image{Expected: refB, Name: "b"}) {
		t.Fatalf("rows: got %+v, want a and b", m.Images)
	}
	want := map[string][2]Cell{
		"complete":    {CellPresent, CellPresent},
		"pulling":     {CellPresent, CellPulling},
		"failed":      {CellPresent, CellFailed},
		"old config":  {CellPresent, CellMissing}, // b is not in its config
		"starting":    {CellMissing, CellMissing},
		"docker down": {CellUnreachable, CellMissing},
		"unreachable": {CellUnreachable, CellUnreachable},
	}
	for _, n := range m.Nodes {
		got := [2]Cell{n.Images[refA], n.Images[refB]}
		if got != want[n.Node] {
			t.Errorf("%s: got %v, want %v", n.Node, got, want[n.Node])
		}
	}
	if m.Complete() {
		t.Error("Complete with nodes lacking b, want not")
	}
	byNode := map[string]Node{}
	for _, n := range m.Nodes {
		byNode[n.Node] = n
	}
	if n := byNode["failed"]; n.Failures[refB] != "manifest unknown\nsecond line" || n.Ready {
		t.Errorf("failed: got %+v, want b's error and not ready", n)
	}
	if n := byNode["docker down"]; n.Ready || !strings.HasPrefix(n.Why, "Docker unreachable since") {
		t.Errorf("docker down: got ready %v, why %q", n.Ready, n.Why)
	}
	if n := byNode["old config"]; !n.Ready || n.ConfigError == "" {
		t.Errorf("old config: got ready %v, config error %q; want ready on its last good config, the error shown", n.Ready, n.ConfigError)
	}
	if n := byNode["unreachable"]; n.Answered() || !strings.Contains(n.Error, "no answer within 5s") {
		t.Errorf("unreachable: got %+v", n)
	}

	// Complete: every agent answered and has every image. One that could
	// not be asked makes it incomplete, but is not an image lacking.
	if ok := NewMatrix([]Report{clusterReports()[0]}); !ok.Complete() || ok.Lacking() || ok.Unanswered() != 0 {
		t.Error("one complete node: want Complete")
	}
	dark := NewMatrix([]Report{clusterReports()[0], clusterReports()[6]})
	if dark.Complete() || dark.Lacking() || dark.Unanswered() != 1 {
		t.Errorf("a complete node and an unreachable one: got complete %v, lacking %v, unanswered %d; want not complete, not lacking, 1 unanswered",
			dark.Complete(), dark.Lacking(), dark.Unanswered())
	}
	if none := NewMatrix([]Report{clusterReports()[6]}); none.Complete() {
		t.Error("no agent answered: want not Complete")
	}
	// Only what the agent reports counts: an image it no longer keeps is missing there.
	if m := NewMatrix([]Report{clusterReports()[0], clusterReports()[3]}); m.Complete() || !m.Lacking() {
		t.Error("a node whose config lacks b: want not Complete")
	}
	// An image a peer served says which peer; one from a registry says nothing.
	copied := present("b", refB)
	copied.Source = agent.PeerSource + "0a1b2c3d"
	m = NewMatrix([]Report{{Agent: Agent{Node: "copier"}, Snapshot: snap(present("a", refA), copied)}})
	if n := m.Nodes[0]; n.Images[refB] != CellPresent || n.FromPeers[refB] != "0a1b2c3d" || len(n.FromPeers) != 1 {
		t.Errorf("an image from a peer: got cell %q, from peers %v; want present, b from 0a1b2c3d only", n.Images[refB], n.FromPeers)
	}
}

func TestGate(t *testing.T) {
	t.Parallel()
	reports := append(clusterReports(), Report{Agent: Agent{Node: "gone", Down: "Consul reports the node down (serfHealth critical)"}, Err: errors.New("down")})
	whys := func(v Verdict) map[string]string {
		out := map[string]string{}
		for _, p := range v.Pending {
			out[p.Node] = p.Why
		}
		return out
	}
	// -image b: waits for every node but "complete"; "gone" is ignored.
	v := Gate{Images: []string{refB}}.Judge(reports)
	if v.Live != 7 || len(v.Ignored) != 1 || v.Ready() {
		t.Errorf("live %d, ignored %d, ready %v: want 7, 1, false", v.Live, len(v.Ignored), v.Ready())
	}
	for node, want := range map[string]string{
		"pulling":     refB + " pulling",
		"failed":      refB + " failed (manifest unknown)",
		"old config":  refB + " not in its config (the file on disk does not load: /local/config.hcl:3:1: Unexpected })",
		"starting":    "starting: no config applied yet",
		"docker down": "Docker unreachable since",
		"unreachable": "unreachable: asking http://10.0.0.9:1/v1/status: no answer within 5s",
	} {
		if got := whys(v)[node]; !strings.HasPrefix(got, want) {
			t.Errorf("-image b, %s: got %q, want %q", node, got, want)
		}
	}
	if _, ok := whys(v)["complete"]; ok {
		t.Error("-image b: complete is pending")
	}
	// -image a: docker down does not count, though its snapshot says present.
	v = Gate{Images: []string{refA}}.Judge(reports)
	if got := whys(v); got["docker down"] == "" || got["complete"] != "" || got["pulling"] != "" || got["old config"] != "" {
		t.Errorf("-image a: got %v", got)
	}
	// An image no agent knows: every node waits for it.
	v = Gate{Images: []string{"registry.example:5000/new:1"}}.Judge(reports[:1])
	if got := whys(v)["complete"]; got != "registry.example:5000/new:1 not in its config yet" {
		t.Errorf("a new image: got %q", got)
	}
	// No -image: each agent's own config.
	v = Gate{}.Judge(reports)
	if got := whys(v); got["complete"] != "" || got["old config"] != "" || !strings.HasPrefix(got["failed"], "1 image(s) missing: "+refB+" failed") {
		t.Errorf("no -image: got %v", got)
	}
	if v := (Gate{}).Judge(nil); v.Ready() {
		t.Error("no agent at all: want not ready")
	}
	if v := (Gate{}).Judge(reports[:1]); !v.Ready() {
		t.Errorf("one complete agent: got %+v, want ready", v)
	}
}

func TestNormalizeRef(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want, err string }{
		{"traefik:v3.1.3", "docker.io/library/traefik:v3.1.3", ""},
		{"registry.service.consul:5000/traefik", "registry.service.consul:5000/traefik:latest", ""},
		{"reg:5000/x@sha256:" + strings.Repeat("a", 64), "reg:5000/x@sha256:" + strings.Repeat("a", 64), ""},
		{"reg:5000/x:1@sha256:" + strings.Repeat("a", 64), "", "names both a tag and a digest"},
		{"Traefik:v3", "", "must be lowercase"},
		{"", "", "not an image reference"},
	} {
		got, err := NormalizeRef(tc.in)
		if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("NormalizeRef(%q): got %q, %v; want %q, %q", tc.in, got, err, tc.want, tc.err)
		}
	}
}

// Wait: rounds until the new image is everywhere, through a catalog that
// fails once on the way.
func TestWaitReady(t *testing.T) {
	t.Parallel()
	var asked atomic.Int64
	late := serveAgent(t, func(w http.ResponseWriter, r *http.Request) {
		if asked.Add(1) < 3 {
			answering(snap(present("a", refA)))(w, r) // b not in its config yet
			return
		}
		answering(snap(present("a", refA), present("b", refB)))(w, r)
	})
	early := serveAgent(t, answering(snap(present("a", refA), present("b", refB))))
	c := startCatalog(t, catalogtest.Nomad, "", late, early)
	c.FailNext(3) // the first round's three attempts: that round's Err
	var rounds []Round
	r, err := Wait(context.Background(), catalogOf(t, c, ""), WaitOptions{
		Gate: Gate{Images: []string{refB}}, Interval: 10 * time.Millisecond,
		Progress: func(r Round) { rounds = append(rounds, r) },
	})
	if err != nil || !r.Verdict.Ready() || r.Verdict.Live != 2 {
		t.Fatalf("got %+v, %v; want ready with 2 live", r, err)
	}
	if len(rounds) != 4 || rounds[0].Err == nil || len(rounds[1].Verdict.Pending) != 1 || !strings.Contains(rounds[1].Verdict.Pending[0].Why, "not in its config yet") {
		t.Errorf("rounds: got %+v; want a catalog error, two rounds waiting for one node, then ready", rounds)
	}
}

func TestWaitTimeout(t *testing.T) {
	t.Parallel()
	c := startCatalog(t, catalogtest.Nomad, "", serveAgent(t, answering(snap(present("a", refA)))), serveAgent(t, stalling))
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	r, err := Wait(ctx, catalogOf(t, c, ""), WaitOptions{Gate: Gate{Images: []string{refA}}, Interval: 10 * time.Millisecond,
		Ask: AskOptions{Timeout: 200 * time.Millisecond}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the deadline", err)
	}
	if len(r.Verdict.Pending) != 1 || !strings.Contains(r.Verdict.Pending[0].Why, "unreachable: ") || r.Verdict.Live != 2 {
		t.Errorf("last round: got %+v, want the stalled agent pending as unreachable", r)
	}
}

// A refused token ends the wait at once: waiting would not fix it.
func TestWaitRefused(t *testing.T) {
	t.Parallel()
	c := startCatalog(t, catalogtest.Consul, "right", serveAgent(t, answering(snap(present("a", refA)))))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := Wait(ctx, catalogOf(t, c, "wrong"), WaitOptions{Interval: 10 * time.Millisecond})
	if err == nil || !Permanent(err) || ctx.Err() != nil || !strings.Contains(err.Error(), "CONSUL_HTTP_TOKEN is refused") {
		t.Errorf("got %v, want the refusal at once", err)
	}
}

// The staged gate waits only for the agents whose node can run a group of
// the job, once each has read the version written, for that job's images.
func TestStagedGate(t *testing.T) {
	t.Parallel()
	const job = "default/registry"
	staged := func(version uint64, j *agent.StagedJob, images ...agent.ImageStatus) agent.Snapshot {
		s := snap(images...)
		s.Nomad = &agent.DiscoveryStatus{Listed: true, Staged: agent.StagedStatus{Version: version}}
		if j != nil {
			s.Nomad.Staged.Jobs = []agent.StagedJob{*j}
		}
		return s
	}
	fits := &agent.StagedJob{Job: job, State: agent.StagedActive, Fits: true, Images: []string{refA}}
	elsewhere := &agent.StagedJob{Job: job, State: agent.StagedActive}
	undecided := &agent.StagedJob{Job: job, State: agent.StagedActive, Blocked: []string{"default/registry/g (staged): placement can't be decided here"}}
	expired := &agent.StagedJob{Job: job, State: agent.StagedExpired, Fits: true}
	noDiscovery := snap(present("a", refA))
	g := Gate{Staged: &StagedGate{Job: job, Version: 42}}
	v := g.Judge([]Report{
		{Agent: Agent{Node: "ready"}, Snapshot: staged(43, fits, present("a", refA))},
		{Agent: Agent{Node: "pulling"}, Snapshot: staged(42, fits, agent.ImageStatus{Expected: refA, State: agent.StatePulling})},
		{Agent: Agent{Node: "behind"}, Snapshot: staged(41, fits, present("a", refA))},
		{Agent: Agent{Node: "elsewhere"}, Snapshot: staged(42, elsewhere)},
		{Agent: Agent{Node: "undecided"}, Snapshot: staged(42, undecided)},
		{Agent: Agent{Node: "expired"}, Snapshot: staged(42, expired)},
		{Agent: Agent{Node: "not applied"}, Snapshot: staged(42, fits)},
		{Agent: Agent{Node: "without it"}, Snapshot: staged(42, nil)},
		{Agent: Agent{Node: "no discovery"}, Snapshot: noDiscovery},
		{Agent: Agent{Node: "unreachable"}, Err: errors.New("no answer")},
	})
	want := map[string]string{
		"pulling":      refA + " pulling",
		"behind":       "has not read version 42 of the staged set yet (it has 41)",
		"undecided":    "placement can't be decided here",
		"expired":      "is expired on this agent",
		"not applied":  refA + " not applied yet",
		"without it":   "does not hold default/registry",
		"no discovery": "discovery is off",
		"unreachable":  "unreachable: no answer",
	}
	if v.Live != 9 || len(v.Pending) != len(want) || len(v.Ignored) != 1 || v.Ignored[0].Node != "elsewhere" {
		t.Fatalf("verdict %+v", v)
	}
	for _, p := range v.Pending {
		if !strings.Contains(p.Why, want[p.Node]) {
			t.Errorf("%s: why %q, want it to say %q", p.Node, p.Why, want[p.Node])
		}
	}
	if v.Ready() {
		t.Error("ready with pending agents")
	}
	if v := g.Judge([]Report{{Agent: Agent{Node: "ready"}, Snapshot: staged(42, fits, present("a", refA))}, {Agent: Agent{Node: "elsewhere"}, Snapshot: staged(42, elsewhere)}}); !v.Ready() || v.Live != 1 || v.Elsewhere != 1 {
		t.Errorf("one ready, one elsewhere: %+v", v)
	}
	// Every agent read the version and none can run the job (seen on a
	// real Nomad: a constraint no node meets): not ready, and Wait says
	// so at once rather than waiting out its timeout.
	nowhere := []Report{{Agent: Agent{Node: "a"}, Snapshot: staged(42, elsewhere)}, {Agent: Agent{Node: "b"}, Snapshot: staged(42, elsewhere)}}
	if v := g.Judge(nowhere); v.Ready() || v.Live != 0 || v.Elsewhere != 2 {
		t.Errorf("fits nowhere: %+v", v)
	}
	// One of them not at the version yet: it may still fit; wait on.
	if v := g.Judge([]Report{nowhere[0], {Agent: Agent{Node: "b"}, Snapshot: staged(41, elsewhere)}}); v.Live != 1 || v.Elsewhere != 1 {
		t.Errorf("one elsewhere, one behind: %+v", v)
	}
}
