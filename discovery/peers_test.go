package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/peer"
)

// The peers' list is kept for peersFresh only when it names another agent:
// a catalog listing this agent alone is read again at the next call, so
// that the others are seen as soon as they are back. The catalog answers
// are Nomad 2.0.5's during a rolling update of a system job on two nodes
// (testdata/nomad-2.0.5/rolling-update): while node B's allocation is
// replaced, the catalog lists node A's alone for about a second.
func TestCatalogPeersKeepsOnlyAListOfOthers(t *testing.T) {
	srv := fakeNomad(t, nomadtest.Options{})
	tok := srv.IssueIdentity(nomadtest.Identity{Name: "relay", JobID: "roll"})
	token := func() (string, error) { return tok, nil }
	c, err := nomad.NewClient(&api.Config{Address: srv.URL}, token)
	if err != nil {
		t.Fatal(err)
	}
	aUpdated := recordedRegistrations(t, 31)  // A's new allocation, B's old one
	bReplaced := recordedRegistrations(t, 38) // A's alone: B's old one stopping
	bUpdated := recordedRegistrations(t, 39)  // A's and B's new ones
	if len(bReplaced) != 1 || len(aUpdated) != 2 || len(bUpdated) != 2 {
		t.Fatalf("recorded answers not as their README says: %v, %v, %v", aUpdated, bReplaced, bUpdated)
	}
	self, other := bReplaced[0].NodeID, aUpdated[1].NodeID
	if other == self {
		t.Fatalf("recorded answers not as their README says: node %s listed alone and beside itself", self)
	}
	cp := &catalogPeers{c: c, self: func() string { return self }, service: "roll", token: token}
	nodes := func() []string {
		t.Helper()
		ps, err := cp.Peers(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range ps {
			out = append(out, p.Node+" "+p.Address)
		}
		slices.Sort(out)
		return out
	}
	srv.SetRegistrations(bReplaced...)
	if got := nodes(); !slices.Equal(got, []string{self + " 127.0.0.1:57322"}) {
		t.Fatalf("listed %v, want this agent alone", got)
	}
	srv.SetRegistrations(bUpdated...)
	want := []string{self + " 127.0.0.1:57322", other + " 127.0.0.1:57463"}
	if got := nodes(); !slices.Equal(got, want) {
		t.Fatalf("B's new agent registered: listed %v, want %v (a list of this agent alone is not kept)", got, want)
	}
	srv.SetRegistrations(bReplaced...)
	if got := nodes(); !slices.Equal(got, want) {
		t.Fatalf("listed %v, want the list naming the other kept for %s", got, peersFresh)
	}
	var _ peer.Lister = cp
}

// recordedRegistrations reads the catalog's answer at index as the fake's
// registrations (group "g": the answer names it only in each ID).
func recordedRegistrations(t *testing.T, index int) []nomadtest.Registration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("testdata/nomad-2.0.5/rolling-update/service-roll-%d.json", index))
	if err != nil {
		t.Fatal(err)
	}
	var answer []api.ServiceRegistration
	if err := json.Unmarshal(b, &answer); err != nil {
		t.Fatal(err)
	}
	var regs []nomadtest.Registration
	for _, r := range answer {
		regs = append(regs, nomadtest.Registration{Service: r.ServiceName, JobID: r.JobID, Group: "g", NodeID: r.NodeID,
			AllocID: r.AllocID, Address: net.JoinHostPort(r.Address, strconv.Itoa(r.Port))})
	}
	return regs
}
