package main

// Peers as a source (nomad peers block, issue #20), end to end: real
// `prefetch run` agents, each with a dockerd of its own (its own socket and
// data-root: a node), found through the fake Nomad's service catalog, each
// presenting the prefetch job's identity to the others; registries behind
// the fault proxy, which counts the bytes they serve.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// peerNode is one node of a peers test: its dockerd and its agent.
type peerNode struct {
	id    string // its Nomad node ID
	bed   *testbed.Bed
	agent *agentProc
	cfg   func(images string) // rewrites its config with these image blocks
	path  string
}

// peerBeds returns n dockerds: the shared bed first, the others started
// for the test (started together: each takes seconds).
func peerBeds(t *testing.T, n int) []*testbed.Bed {
	t.Helper()
	beds := make([]*testbed.Bed, n)
	beds[0] = bed
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Go(func() { beds[i], errs[i] = testbed.Start() })
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if errs[i] != nil {
			t.Fatalf("starting dockerd %d: %v", i, errs[i])
		}
		b := beds[i]
		t.Cleanup(func() { b.Close() })
	}
	return beds
}

// startPeers starts one agent per bed, each on a node of its own in the
// fake Nomad and registered in its catalog before any starts, with the
// peers block order and the config's images (image blocks).
func startPeers(t *testing.T, srv *nomadtest.Server, beds []*testbed.Bed, order, images string) []*peerNode {
	t.Helper()
	nodes := make([]*peerNode, len(beds))
	var regs []nomadtest.Registration
	addrs := make([]string, len(beds))
	for i := range beds {
		n := nomadFixture(t, "node.json")
		id := fmt.Sprintf("%08x-aaaa-4000-8000-%012x", i+1, i+1)
		n["ID"], n["Name"] = id, fmt.Sprintf("node-%d", i+1)
		srv.AddNode(n)
		addrs[i] = testbed.FreeAddr(t)
		nodes[i] = &peerNode{id: id, bed: beds[i]}
		regs = append(regs, nomadtest.Registration{Service: "prefetch", NodeID: id, Address: addrs[i]})
	}
	srv.SetRegistrations(regs...)
	for i, n := range nodes {
		dir := t.TempDir()
		tokenFile, idFile := filepath.Join(dir, "nomad_token"), filepath.Join(dir, "nomad_relay.jwt")
		ident := srv.IssueIdentity(nomadtest.Identity{Name: "relay", Audience: []string{config.DefaultRelayAudience}, TTL: time.Hour})
		for f, v := range map[string]string{tokenFile: fmt.Sprintf("agent-%d", i), idFile: ident} {
			if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		body := func(images string) string {
			return daemonSettingsFor(n.bed.Host) + fmt.Sprintf(`%s
nomad {
  address     = %q
  token_file  = %q
  node_id     = %q
  infra_image = ""
  peers {
    order         = %q
    wait          = "1m"
    identity_file = %q
  }
}
`, images, srv.URL, tokenFile, n.id, order, idFile)
		}
		n.path = filepath.Join(dir, "config.hcl")
		n.cfg = func(images string) {
			if err := os.WriteFile(n.path+".new", []byte(body(images)), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(n.path+".new", n.path); err != nil {
				t.Fatal(err)
			}
		}
		n.cfg(images)
		n.agent = startAgentOn(t, addrs[i], n.path, filepath.Join(dir, "lock"))
	}
	return nodes
}

// localID is the ID ref names on b, "" when absent.
func localID(t *testing.T, b *testbed.Bed, ref string) string {
	t.Helper()
	imgs, err := b.Images(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return imgs[ref]
}

// With every registry down, an image present on one node reaches the
// others from it: the same image ID, tagged as expected, its source the
// peer's node; and the bytes are counted on both sides.
func TestPeersServeWhenRegistriesDown(t *testing.T) {
	testbed.Need(t, bed)
	t.Parallel()
	_, proxy := startProxied(t, "peers-down")
	ref := proxy.Addr + "/app:1"
	ctx := context.Background()
	beds := peerBeds(t, 3)
	if _, err := beds[0].Import(ctx, ref, "peers-down", 256<<10); err != nil {
		t.Fatal(err)
	}
	want := localID(t, beds[0], ref)
	proxy.Set(faultproxy.Hang, -1) // the registry answers nothing any more
	srv := fakeClusterWith(t, nomadtest.Options{})
	nodes := startPeers(t, srv, beds, config.PeersLast, fmt.Sprintf("image \"app\" {\n  expected = %q\n}\n", ref))
	for _, n := range nodes[1:] {
		waitFor(t, "the image to reach "+n.id+" from a peer", 90*time.Second, wantState(t, n.agent, "app", agent.StatePresent))
		img, _ := n.agent.image(t, "app")
		if img.Source != agent.PeerSource+nodes[0].id[:8] && !strings.HasPrefix(img.Source, agent.PeerSource) {
			t.Errorf("%s: source %q, want a peer's", n.id, img.Source)
		}
		if got := localID(t, n.bed, ref); got != want {
			t.Errorf("%s: %s names %s, want the peer's %s", n.id, ref, got, want)
		}
		if img.Result != string(agent.Copied) {
			t.Errorf("%s: result %q, want %q", n.id, img.Result, agent.Copied)
		}
		if taken := n.agent.metric(t, "prefetch_peer_bytes_total", `direction="taken"`); taken < 256<<10 {
			t.Errorf("%s: prefetch_peer_bytes_total{direction=taken} = %v, want at least the layer", n.id, taken)
		}
	}
	if served := nodes[0].agent.metric(t, "prefetch_peer_bytes_total", `direction="served"`); served < 256<<10 {
		t.Errorf("the node that had it: prefetch_peer_bytes_total{direction=served} = %v, want at least the layer", served)
	}
}

// With the registry up and a new image rolled out to 4 running agents at
// once (order "first": each config gains it in the same moment), the
// registry serves the image's blobs about once: one agent pulls it, the
// others copy it from a peer.
func TestPeersOneRegistryPullPerCluster(t *testing.T) {
	testbed.Need(t, bed)
	t.Parallel()
	reg, proxy := startProxied(t, "peers-once")
	const size = 4 << 20
	if _, _, err := bed.Seed(context.Background(), reg.Addr+"/app:2", "peers-once", size); err != nil {
		t.Fatal(err)
	}
	ref := proxy.Addr + "/app:2"
	beds := peerBeds(t, 4)
	srv := fakeClusterWith(t, nomadtest.Options{})
	nodes := startPeers(t, srv, beds, config.PeersFirst, "")
	proxy.ResetCounts()
	for _, n := range nodes {
		n.cfg(fmt.Sprintf("image \"app\" {\n  expected = %q\n}\n", ref))
	}
	fromPeer := 0
	for _, n := range nodes {
		waitFor(t, "the image on "+n.id, 120*time.Second, wantState(t, n.agent, "app", agent.StatePresent))
		if img, _ := n.agent.image(t, "app"); strings.HasPrefix(img.Source, agent.PeerSource) {
			fromPeer++
		}
	}
	blobs := proxy.BodyBytes("GET blob")
	t.Logf("the registry served %d bytes of blobs (%d GETs) for a %d-byte layer; %d of 4 nodes copied it from a peer", blobs, proxy.Count("GET blob"), size, fromPeer)
	if fromPeer != 3 {
		t.Errorf("%d nodes copied the image from a peer, want 3 (one pulls it)", fromPeer)
	}
	if blobs > size*5/4+64<<10 {
		t.Errorf("the registry served %d bytes of blobs, want about one copy (%d)", blobs, size)
	}
}
