package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/identity"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
	"github.com/nomad-prefetch/nomad-prefetch/relay"
)

// relayAuthorizer is the relay's check of a subscriber: it must present a
// workload identity Nomad signed (its keys, from c), with the relay's
// audience, of the same job and namespace as this agent's own relay
// identity (read again at each request: Nomad renews it), whose allocation
// still runs (asked of Nomad once a minute at most per allocation: a
// failover costs Nomad one allocation read per agent, not a subscription).
//
// What a refused caller is told names the reason only (a missing identity,
// a signature, an audience, another job...): the job and namespace the
// relay expects, and the claims it saw, go to this agent's log at DEBUG.
func relayAuthorizer(c *nomad.Client, r *config.Relay, own func() (string, error), log *slog.Logger) func(*http.Request) error {
	keys := identity.FromNomad(c)
	allocs := &identity.Allocations{Nomad: c}
	return func(req *http.Request) error {
		tok, err := own()
		if err == nil && tok == "" {
			err = errors.New("the file is empty")
		}
		var mine identity.Claims
		if err == nil {
			mine, err = identity.ParseUnverified(tok)
		}
		if err != nil {
			return fmt.Errorf("%w: this agent's own relay identity can't be read, so no caller can be checked against it: %w", relay.ErrUnavailable, err)
		}
		v := &identity.Verifier{Keys: keys, Audience: r.Audience, Namespace: mine.Namespace, JobID: mine.JobID, Allocations: allocs}
		_, err = v.Verify(req.Context(), identity.FromRequest(req))
		var un *identity.UnavailableError
		var refused *identity.RefusedError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &un):
			return fmt.Errorf("%w: %w", relay.ErrUnavailable, err)
		case errors.Is(err, identity.ErrNoToken):
			return errors.New("relay: present the prefetch job's relay workload identity (X-Nomad-Token)")
		case errors.As(err, &refused):
			log.Debug("relay: a subscriber refused", "remote", req.RemoteAddr, "reason", string(refused.Reason), "detail", refused.Detail)
			return errors.New("relay: workload identity refused: " + string(refused.Reason))
		}
		log.Debug("relay: a subscriber refused", "remote", req.RemoteAddr, "error", err.Error())
		return errors.New("relay: workload identity refused")
	}
}
