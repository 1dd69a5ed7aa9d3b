package identity_test

import (
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/identity"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// An agent serving its peers learns from its own relay identity which job
// and namespace to expect, and refuses every caller that does not present
// the same job's identity.
func ExampleVerifier() {
	own, err := os.ReadFile(filepath.Join(os.Getenv("NOMAD_SECRETS_DIR"), "nomad_relay.jwt"))
	if err != nil {
		slog.Error("reading the relay identity", "err", err)
		return
	}
	self, err := identity.ParseUnverified(strings.TrimSpace(string(own)))
	if err != nil {
		slog.Error("reading the relay identity", "err", err)
		return
	}
	c, err := nomad.NewClient(api.DefaultConfig(), nomad.TokenFromEnvOrFile(""))
	if err != nil {
		slog.Error("building the Nomad client", "err", err)
		return
	}
	v := &identity.Verifier{
		Keys:      identity.FromNomad(c),
		Audience:  "nomad-prefetch-relay",
		Namespace: self.Namespace,
		JobID:     self.JobID,
	}
	serve := http.NotFoundHandler() // the relay's handler
	_ = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := v.Verify(r.Context(), identity.FromRequest(r))
		var refused *identity.RefusedError
		switch {
		case err == nil:
			serve.ServeHTTP(w, r)
		case errors.Is(err, identity.ErrNoToken):
			http.Error(w, "a workload identity is required", http.StatusUnauthorized)
		case errors.As(err, &refused):
			slog.Info("caller refused", "reason", refused.Reason, "detail", refused.Detail)
			http.Error(w, "forbidden", http.StatusForbidden)
		default: // Nomad's keys unavailable, or the caller gone
			http.Error(w, "cannot check identities now", http.StatusServiceUnavailable)
		}
	})
}
