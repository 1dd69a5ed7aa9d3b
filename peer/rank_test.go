package peer

import (
	"fmt"
	"slices"
	"testing"
)

// Every agent computes the same order for an image; each sees the ones
// ranked before it ahead; one whose node is unknown ranks last; a node
// listed twice, or without an address, is one peer or none.
func TestRank(t *testing.T) {
	var peers []Peer
	for i := range 6 {
		peers = append(peers, Peer{Node: fmt.Sprintf("node-%d", i), Address: fmt.Sprintf("127.0.0.1:%d", 9000+i)})
	}
	const image = "reg:5000/app:1"
	all, _ := rank(peers, "", image)
	if len(all) != len(peers) {
		t.Fatalf("an agent whose node is unknown: %d ahead, want all %d", len(all), len(peers))
	}
	for i, p := range all {
		ahead, others := rank(peers, p.Node, image)
		if !slices.Equal(ahead, all[:i]) || !slices.Equal(others, all[i+1:]) {
			t.Errorf("%s (rank %d): ahead %v, others %v; want the same order as everyone's", p.Node, i, ahead, others)
		}
	}
	dup := append(slices.Clone(peers), Peer{Node: "node-0", Address: "127.0.0.1:1"}, Peer{Node: "node-x"})
	if got, _ := rank(dup, "", image); !slices.Equal(got, all) {
		t.Errorf("with a node listed twice and one without an address: %v, want %v", got, all)
	}
	// Another image, another order (rendezvous hashing spreads the owners).
	owners := map[string]bool{}
	for i := range 20 {
		o, _ := rank(peers, "", fmt.Sprintf("reg:5000/app:%d", i))
		owners[o[0].Node] = true
	}
	if len(owners) < 3 {
		t.Errorf("20 images have %d distinct first-ranked nodes among 6, want them spread", len(owners))
	}
	// Each agent's own asking order differs, so copies fan out.
	a, b := personal(all, "node-0", image), personal(all, "node-1", image)
	if slices.Equal(a, b) {
		t.Errorf("two agents ask in the same order %v", a)
	}
}
