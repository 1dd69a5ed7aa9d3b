package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/nomad-prefetch/nomad-prefetch/cluster"
)

// writeMatrix prints the cluster's matrix for a person (every string of an
// agent's or a registration's through clean): a summary line,
// one row per image and one column per node (byNode: the other way
// round), then the agents that could not be asked and why, the agents
// that are not ready and why, and the failures.
func writeMatrix(w io.Writer, catalog string, m cluster.Matrix, byNode bool) error {
	answered, complete := 0, 0
	for _, n := range m.Nodes {
		if n.Answered() {
			answered++
		}
		if n.Complete(m.Images) {
			complete++
		}
	}
	fmt.Fprintf(w, "%d agent(s) in %s: %d answered, %d have every image\n\n", len(m.Nodes), catalog, answered, complete)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if byNode {
		writeByNode(tw, m)
	} else {
		writeByImage(tw, m)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	writeNotes(w, m)
	return nil
}

func writeByImage(w io.Writer, m cluster.Matrix) {
	head := []string{"IMAGE", "EXPECTED"}
	for _, n := range m.Nodes {
		head = append(head, clean(n.Node, maxField))
	}
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, img := range m.Images {
		row := []string{clean(img.Name, maxField), clean(img.Expected, maxField)}
		for _, n := range m.Nodes {
			row = append(row, cellText(n, img))
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
}

func writeByNode(w io.Writer, m cluster.Matrix) {
	head := []string{"NODE", "ADDRESS"}
	for _, img := range m.Images {
		head = append(head, clean(img.Name, maxField))
	}
	fmt.Fprintln(w, strings.Join(head, "\t"))
	for _, n := range m.Nodes {
		row := []string{clean(n.Node, maxField), clean(n.Address, maxField)}
		for _, img := range m.Images {
			row = append(row, cellText(n, img))
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
}

// cellText is one cell as the table shows it: its state, and for an image a
// peer served, that peer's node.
func cellText(n cluster.Node, img cluster.Image) string {
	c := string(n.Images[img.Expected])
	if peer, ok := n.FromPeers[img.Expected]; ok {
		c += " (peer " + clean(peer, maxField) + ")"
	}
	return c
}

// writeNotes says why the cells that are not present are so.
func writeNotes(w io.Writer, m cluster.Matrix) {
	var unasked, unready, configs, failures []string
	for _, n := range m.Nodes {
		switch {
		case !n.Answered():
			unasked = append(unasked, fmt.Sprintf("%s %s: %s", clean(n.Node, maxField), clean(n.Address, maxField), clean(n.Error, maxText)))
		case !n.Ready:
			unready = append(unready, fmt.Sprintf("%s %s: %s", clean(n.Node, maxField), clean(n.Address, maxField), clean(n.Why, maxText)))
		}
		if n.ConfigError != "" {
			configs = append(configs, fmt.Sprintf("%s: %s", clean(n.Node, maxField), clean(firstLine(n.ConfigError), maxText)))
		}
		for _, img := range m.Images {
			if e, ok := n.Failures[img.Expected]; ok {
				failures = append(failures, fmt.Sprintf("%s %s: %s", clean(n.Node, maxField), clean(img.Name, maxField), clean(firstLine(e), maxText)))
			}
		}
	}
	section := func(title string, lines []string) {
		if len(lines) > 0 {
			fmt.Fprintf(w, "\n%s:\n  %s\n", title, strings.Join(lines, "\n  "))
		}
	}
	section(fmt.Sprintf("could not ask %d agent(s)", len(unasked)), unasked)
	section("not ready", unready)
	section("config on disk not in use (the last good one is)", configs)
	section("failed", failures)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
