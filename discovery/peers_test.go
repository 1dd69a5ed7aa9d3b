package discovery

import (
	"context"
	"slices"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/peer"
)

// The peers' list is kept for peersFresh only when it names another agent:
// a catalog listing this agent alone (the others' registrations gone for
// a moment, as while the job is updated one node after the other) is read
// again at the next call, so that the others are seen as soon as they are
// back.
func TestCatalogPeersKeepsOnlyAListOfOthers(t *testing.T) {
	srv := fakeNomad(t, nomadtest.Options{})
	tok := srv.IssueIdentity(nomadtest.Identity{Name: "relay"})
	token := func() (string, error) { return tok, nil }
	c, err := nomad.NewClient(&api.Config{Address: srv.URL}, token)
	if err != nil {
		t.Fatal(err)
	}
	self, other := "00000001-aaaa-4000-8000-000000000001", "00000002-aaaa-4000-8000-000000000002"
	mine := nomadtest.Registration{Service: "prefetch", NodeID: self, Address: "127.0.0.1:9101"}
	theirs := nomadtest.Registration{Service: "prefetch", NodeID: other, Address: "127.0.0.1:9102"}
	cp := &catalogPeers{c: c, self: func() string { return self }, service: "prefetch", token: token}
	nodes := func() []string {
		t.Helper()
		ps, err := cp.Peers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Node)
		}
		slices.Sort(out)
		return out
	}
	srv.SetRegistrations(mine)
	if got := nodes(); !slices.Equal(got, []string{self}) {
		t.Fatalf("listed %v, want this agent alone", got)
	}
	srv.SetRegistrations(mine, theirs)
	if got := nodes(); !slices.Equal(got, []string{self, other}) {
		t.Fatalf("the other agent back: listed %v, want both (a list of this agent alone is not kept)", got)
	}
	srv.SetRegistrations(mine)
	if got := nodes(); !slices.Equal(got, []string{self, other}) {
		t.Fatalf("listed %v, want the list naming the other kept for %s", got, peersFresh)
	}
	var _ peer.Lister = cp
}
