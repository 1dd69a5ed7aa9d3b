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

// relayAuthorizer is the relay's check of a subscriber (agentAuthorizer).
func relayAuthorizer(c *nomad.Client, r *config.Relay, own func() (string, error), log *slog.Logger) func(*http.Request) error {
	return agentAuthorizer(c, r.Audience, own, log, "relay", relay.ErrUnavailable)
}

// agentAuthorizer is an agent's check of another agent calling it (the
// relay's subscribers, the peers' transfers; what names the endpoint in
// messages): it must present a workload identity Nomad signed (its keys,
// from c), with audience, of the same job and namespace as this agent's
// own identity (read again at each request: Nomad renews it), whose
// allocation still runs (asked of Nomad once a minute at most per
// allocation: a failover costs Nomad one allocation read per agent, not a
// subscription). A check that can't be made now wraps unavailable.
//
// What a refused caller is told names the reason only (a missing identity,
// a signature, an audience, another job...): the job and namespace
// expected, and the claims seen, go to this agent's log at DEBUG.
func agentAuthorizer(c *nomad.Client, audience string, own func() (string, error), log *slog.Logger, what string, unavailable error) func(*http.Request) error {
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
			return fmt.Errorf("%w: this agent's own identity can't be read, so no caller can be checked against it: %w", unavailable, err)
		}
		v := &identity.Verifier{Keys: keys, Audience: audience, Namespace: mine.Namespace, JobID: mine.JobID, Allocations: allocs}
		_, err = v.Verify(req.Context(), identity.FromRequest(req))
		var un *identity.UnavailableError
		var refused *identity.RefusedError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &un):
			return fmt.Errorf("%w: %w", unavailable, err)
		case errors.Is(err, identity.ErrNoToken):
			return errors.New(what + ": present the prefetch job's relay workload identity (X-Nomad-Token)")
		case errors.As(err, &refused):
			log.Debug(what+": a caller refused", "remote", req.RemoteAddr, "reason", string(refused.Reason), "detail", refused.Detail)
			return errors.New(what + ": workload identity refused: " + string(refused.Reason))
		}
		log.Debug(what+": a caller refused", "remote", req.RemoteAddr, "error", err.Error())
		return errors.New(what + ": workload identity refused")
	}
}
