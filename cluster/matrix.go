package cluster

import (
	"cmp"
	"slices"
	"strings"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
)

// Cell is what one node says about one image.
type Cell string

// The cells of the matrix.
const (
	// CellPresent: the image is present on the node (the agent's Missing
	// rule), and the node's Docker daemon answers.
	CellPresent Cell = "present"
	// CellPulling: not present, a fetch is in flight.
	CellPulling Cell = "pulling"
	// CellFailed: not present, the last attempt failed.
	CellFailed Cell = "failed"
	// CellMissing: not present and not being fetched, or not in the
	// node's config at all, or the agent has not applied a config yet.
	CellMissing Cell = "missing"
	// CellUnreachable: unknown, because the agent could not be asked or
	// its Docker daemon does not answer.
	CellUnreachable Cell = "unreachable"
)

// Image is one row of the matrix.
type Image struct {
	Expected string `json:"expected"` // normalised, the row's key
	Name     string `json:"name"`     // the config's label for it
}

// Node is one column of the matrix: an agent and what it answered.
type Node struct {
	Agent
	// Error is why the agent could not be asked; its cells are unreachable.
	Error string `json:"error,omitempty"`
	// Ready and Why are the agent's own verdict (agent.Snapshot.Ready):
	// every image of its config present, its Docker daemon answering.
	Ready bool   `json:"ready"`
	Why   string `json:"why"`
	// ConfigError is why the config file on the node is not in use.
	ConfigError string `json:"config_error,omitempty"`
	// Images are the cells of this column, by expected reference.
	Images map[string]Cell `json:"images"`
	// Failures holds each failed image's last error, by expected reference.
	Failures map[string]string `json:"failures,omitempty"`
	// FromPeers names, for each present image a peer agent served, that
	// peer's node, by expected reference.
	FromPeers map[string]string `json:"from_peers,omitempty"`
}

// Answered reports whether the agent answered.
func (n Node) Answered() bool { return n.Error == "" }

// Complete reports whether the agent answered and every image is present.
func (n Node) Complete(images []Image) bool {
	if !n.Answered() {
		return false
	}
	for _, img := range images {
		if n.Images[img.Expected] != CellPresent {
			return false
		}
	}
	return true
}

// Matrix is every image any agent keeps, by every agent the catalog lists.
type Matrix struct {
	Images []Image `json:"images"` // rows, by expected reference
	Nodes  []Node  `json:"nodes"`  // columns, in the catalog's order
}

// Complete reports whether every agent answered and has every image:
// only then is the cluster known to be fine.
func (m Matrix) Complete() bool {
	return len(m.Nodes) > 0 && !m.Lacking() && m.Unanswered() == 0
}

// Lacking reports whether an agent that answered lacks an image.
func (m Matrix) Lacking() bool {
	for _, n := range m.Nodes {
		if n.Answered() && !n.Complete(m.Images) {
			return true
		}
	}
	return false
}

// Unanswered counts the agents that could not be asked (unreachable,
// reported down by the catalog, or with a registration that is not an
// agent's): what they hold is unknown.
func (m Matrix) Unanswered() int {
	n := 0
	for _, node := range m.Nodes {
		if !node.Answered() {
			n++
		}
	}
	return n
}

// NewMatrix lays the reports out as a matrix.
func NewMatrix(reports []Report) Matrix {
	var m Matrix
	names := map[string]string{}
	for _, r := range reports {
		if r.Err != nil {
			continue
		}
		for _, img := range r.Snapshot.Images {
			ref := normalized(img.Expected)
			if _, ok := names[ref]; !ok {
				names[ref] = img.Name
				m.Images = append(m.Images, Image{Expected: ref, Name: img.Name})
			}
		}
	}
	slices.SortFunc(m.Images, func(a, b Image) int { return cmp.Compare(a.Name+"\x00"+a.Expected, b.Name+"\x00"+b.Expected) })
	for _, r := range reports {
		m.Nodes = append(m.Nodes, column(r, m.Images))
	}
	return m
}

// column is one report's cells for images.
func column(r Report, images []Image) Node {
	n := Node{Agent: r.Agent, Images: make(map[string]Cell, len(images))}
	if r.Err != nil {
		n.Error, n.Why = r.Err.Error(), "unreachable"
		for _, img := range images {
			n.Images[img.Expected] = CellUnreachable
		}
		return n
	}
	s := r.Snapshot
	n.Ready, n.Why = s.Ready()
	n.ConfigError = s.ConfigError
	for _, img := range images {
		n.Images[img.Expected] = CellMissing
	}
	missing := missingSet(s)
	for _, img := range s.Images {
		c := cellOf(s, img, missing)
		n.Images[normalized(img.Expected)] = c
		if peer, ok := strings.CutPrefix(img.Source, agent.PeerSource); ok && c == CellPresent {
			if n.FromPeers == nil {
				n.FromPeers = map[string]string{}
			}
			n.FromPeers[normalized(img.Expected)] = peer
		}
		if c == CellFailed && img.LastError != "" {
			if n.Failures == nil {
				n.Failures = map[string]string{}
			}
			n.Failures[normalized(img.Expected)] = img.LastError
		}
	}
	return n
}

// missingSet is s.Missing() by expected reference.
func missingSet(s agent.Snapshot) map[string]bool {
	out := map[string]bool{}
	for _, img := range s.Missing() {
		out[img.Expected] = true
	}
	return out
}

// cellOf is one image's cell on a node whose agent answered s; missing is
// missingSet(s).
func cellOf(s agent.Snapshot, img agent.ImageStatus, missing map[string]bool) Cell {
	if s.DockerError != "" {
		return CellUnreachable
	}
	if s.ConfigLoaded.IsZero() {
		return CellMissing
	}
	if !missing[img.Expected] {
		return CellPresent
	}
	switch img.State {
	case agent.StatePulling:
		return CellPulling
	case agent.StateFailed:
		return CellFailed
	}
	return CellMissing
}
