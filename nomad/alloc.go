package nomad

import (
	"context"
	"fmt"
	"net/url"
)

// AllocationStatus returns an allocation's desired status ("run", "stop",
// "evict") and client status ("pending", "running", "complete", "failed",
// "lost"), from GET /v1/allocation/:id. Recorded from Nomad 2.0.5
// (internal/nomadtest/testdata/nomad-2.0.5/alloc-get.txt): a running
// allocation is run/running, one stopped is stop/complete, read with the
// token of another allocation of the job; an ID Nomad does not hold (never
// was, or garbage collected) is a 404 "alloc not found", an *HTTPError.
// The namespace parameter is not needed: Nomad checks the allocation's
// own. Give ctx a deadline.
func (c *Client) AllocationStatus(ctx context.Context, id string) (desired, client string, err error) {
	a, _, err := c.api.Allocations().Info(url.PathEscape(id), Query(ctx, nil))
	if err != nil {
		return "", "", fmt.Errorf("reading allocation %s: %w", id, Err(err))
	}
	return a.DesiredStatus, a.ClientStatus, nil
}
