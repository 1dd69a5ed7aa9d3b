package peer

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// maxPeers bounds the registrations one ranking reads: a catalog is the
// cluster's, but its size is not this agent's to trust.
const maxPeers = 10000

// score is rendezvous (highest random weight) hashing: every agent
// computes the same score for a node and an image, so that they agree on
// an order without talking, and a node coming or going moves only the
// images it ranked first for.
func score(node, image string) uint64 {
	h := sha256.New()
	h.Write([]byte(node))
	h.Write([]byte{0})
	h.Write([]byte(image))
	return binary.BigEndian.Uint64(h.Sum(nil))
}

// rank orders the peers for image as every agent does, this agent (self)
// left out: ahead are the ones ranked before it, others the ones after (an
// agent whose node is not known yet ranks last).
// Registrations of one node are one peer (the first address listed); a
// peer without a node or an address is left out.
func rank(peers []Peer, self, image string) (ahead, others []Peer) {
	type scored struct {
		p Peer
		s uint64
	}
	seen := map[string]bool{self: true}
	var all []scored
	for _, p := range peers[:min(len(peers), maxPeers)] {
		if p.Node == "" || p.Address == "" || seen[p.Node] {
			continue
		}
		seen[p.Node] = true
		all = append(all, scored{p, score(p.Node, image)})
	}
	slices.SortFunc(all, func(a, b scored) int {
		return cmp.Or(cmp.Compare(b.s, a.s), cmp.Compare(a.p.Node, b.p.Node))
	})
	mine := uint64(0)
	if self != "" {
		mine = score(self, image)
	}
	for _, x := range all {
		if self == "" || x.s > mine || x.s == mine && x.p.Node < self {
			ahead = append(ahead, x.p)
		} else {
			others = append(others, x.p)
		}
	}
	return ahead, others
}

// personal orders peers for self's own asking: each agent in an order of
// its own (the score of self and the peer together), so that agents
// copying the same image ask different peers first and the copies fan
// out instead of all queueing at one.
func personal(peers []Peer, self, image string) []Peer {
	out := slices.Clone(peers)
	slices.SortStableFunc(out, func(a, b Peer) int {
		return cmp.Compare(score(self+"\x00"+a.Node, image), score(self+"\x00"+b.Node, image))
	})
	return out
}
