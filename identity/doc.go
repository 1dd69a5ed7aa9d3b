// Package identity verifies Nomad workload identities, so that agents serve
// each other (the relay of Nomad's Job event stream, issue #19; later peers)
// only when the caller presents the prefetch job's own identity, checked
// against the keys Nomad itself publishes, and no secret of the project's
// has to be shared or rotated.
//
// Nomad (1.7 and later) signs each workload identity as a JWT, RS256 with
// its key's ID in the kid header, and serves the public keys at
// GET /.well-known/jwks.json (nomad.Client.JWKS). A task that declares
//
//	identity {
//	  name = "relay"
//	  aud  = ["nomad-prefetch-relay"]
//	  ttl  = "1h"
//	  file = true
//	}
//
// finds its token in ${NOMAD_SECRETS_DIR}/nomad_relay.jwt, renewed by Nomad
// before it expires; it sends it as X-Nomad-Token (or a bearer token,
// FromRequest), and the one serving it checks it with a Verifier: a known
// key's signature, an allowed algorithm (RS256, ES256 or EdDSA; never none
// and never an HMAC, whose secret would be the public key), the audience,
// the namespace and the job ID expected (ParseUnverified reads them from
// the agent's own token), nbf and exp with a small leeway, and a bounded
// size.
//
// A token without exp (Nomad's default identity, or a named one without a
// ttl) never expires by itself: Nomad's own API refuses it once its
// allocation has stopped, which the signature does not show. It is
// therefore refused unless Verifier.MaxAge is set, and then accepted only
// while its iat is younger than MaxAge. Give the identity a ttl instead.
// Verifier.Allocations closes the rest of that gap for tokens with a ttl
// too: it asks Nomad whether the token's allocation still runs (cached, a
// minute for a running one) and refuses it once it does not.
//
// Keys caches Nomad's key set. A token naming a kid the set lacks makes it
// fetch again, but never more than once per MinInterval (30 s), so that a
// stranger sending made-up kids cannot make it hammer Nomad; a set older
// than MaxAge (10 min) is fetched again when next used, so rotated and
// removed keys are seen; a failed fetch keeps the last good set. Fetches
// run in the caller that needs one, each with its own deadline; there is
// no goroutine to own.
//
// Errors callers branch on: ErrNoToken (nothing presented: 401), a
// *RefusedError (presented and refused: 403; its Reason never echoes the
// token), an *UnavailableError (Nomad's keys could not be had: 503). The
// details are for logs; tell the caller no more than the status.
//
// It imports nomad of the project's (and go-jose), and must not import
// agent, discovery, daemon or cmd.
package identity
