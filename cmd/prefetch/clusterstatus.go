package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/cluster"
)

// catalogTimeout bounds reading the catalog, its retries included.
const catalogTimeout = 45 * time.Second

// runClusterStatus is `prefetch status -cluster`: every agent the catalog
// lists, asked at once, printed as a matrix.
func runClusterStatus(ctx context.Context, cf *clusterFlags, asJSON, byNode bool, stdout, stderr io.Writer) int {
	cat, err := cf.catalog()
	if err != nil {
		fmt.Fprintf(stderr, "prefetch status: %v (see prefetch status -h)\n", err)
		return exitUsage
	}
	ask, err := cf.ask()
	if err != nil {
		fmt.Fprintf(stderr, "prefetch status: %v\n", err)
		return exitUsage
	}
	cctx, cancel := context.WithTimeout(ctx, catalogTimeout)
	agents, err := cat.Agents(cctx)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "prefetch status: reading %s: %s\n", cat, clean(err.Error(), maxText))
		return exitFailed
	}
	if len(agents) == 0 {
		fmt.Fprintf(stderr, "prefetch status: no agent is registered in %s: is the prefetch job running, and is -service or -provider right?\n", cat)
		return exitFailed
	}
	m := cluster.NewMatrix(cluster.Ask(ctx, agents, ask))
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(struct {
			Catalog  string `json:"catalog"`
			Complete bool   `json:"complete"`
			cluster.Matrix
		}{cat.String(), m.Complete(), m})
	} else {
		err = writeMatrix(stdout, cat.String(), m, byNode)
	}
	if err != nil {
		fmt.Fprintf(stderr, "prefetch status: %v\n", err)
		return exitFailed
	}
	switch {
	case m.Lacking():
		return exitFailed
	case m.Unanswered() > 0:
		return exitUnasked
	}
	return exitOK
}
