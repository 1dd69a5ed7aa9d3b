package identity

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// DefaultLeeway is the clock skew allowed between Nomad's servers and the
// verifier, on nbf, iat and exp.
const DefaultLeeway = 30 * time.Second

// Verifier checks that a token is a workload identity Nomad signed for the
// job expected, to the audience expected. Its fields are set once, before
// use; it is then safe for concurrent use.
type Verifier struct {
	Keys      *Keys
	Audience  string // required: the identity block's aud, "nomad-prefetch-relay"
	Namespace string // required: the job's namespace
	JobID     string // required: the job's ID (a parent's for a dispatched or periodic job)
	Issuer    string // checked when set (Nomad's oidc_issuer)
	// Now is the clock (time.Now).
	Now func() time.Time
	// Leeway is the skew allowed on nbf, iat and exp: 0 is DefaultLeeway,
	// negative none.
	Leeway time.Duration
	// MaxAge, when positive, accepts a token without exp while its iat is
	// younger than MaxAge; 0 refuses every token without exp (see the
	// package doc).
	MaxAge time.Duration
	// Allocations, when set, also refuses a token whose allocation no
	// longer runs, as Nomad does, after everything else verified.
	Allocations *Allocations
}

// Verify returns a token's claims once it has checked them all. Errors:
// ErrNoToken, a *RefusedError, an *UnavailableError, ctx's (a fetch of the
// keys waited for), or one saying that v lacks a required field.
func (v *Verifier) Verify(ctx context.Context, token string) (Claims, error) {
	if v.Keys == nil || v.Audience == "" || v.Namespace == "" || v.JobID == "" {
		return Claims{}, errors.New("identity: a Verifier needs Keys, Audience, Namespace and JobID")
	}
	tok, hdr, err := parse(token)
	if err != nil {
		return Claims{}, err
	}
	if hdr.KeyID == "" {
		return Claims{}, refused(ReasonUnknownKey, "no kid in the header")
	}
	keys, err := v.Keys.lookup(ctx, hdr.KeyID)
	if errors.Is(err, errUnknownKey) {
		return Claims{}, refused(ReasonUnknownKey, "kid %s", quote(hdr.KeyID))
	}
	if err != nil {
		return Claims{}, err
	}
	alg := jose.SignatureAlgorithm(hdr.Algorithm)
	var verified, fitted bool
	for _, key := range keys {
		if (key.Algorithm != "" && key.Algorithm != hdr.Algorithm) || !fits(alg, key.Key) {
			continue
		}
		fitted = true
		if tok.Claims(key.Key) == nil {
			verified = true
			break
		}
	}
	switch {
	case !fitted:
		return Claims{}, refused(ReasonAlgorithm, "%s does not fit the key %s", quote(hdr.Algorithm), quote(hdr.KeyID))
	case !verified:
		return Claims{}, refused(ReasonSignature, "kid %s", quote(hdr.KeyID))
	}
	var p payload
	if err := tok.UnsafeClaimsWithoutVerification(&p); err != nil { // verified just above
		return Claims{}, &RefusedError{Reason: ReasonMalformed, Detail: "its claims do not decode"}
	}
	c := p.claims(hdr.KeyID)
	if err := v.check(c); err != nil {
		return c, err
	}
	if v.Allocations != nil {
		return c, v.Allocations.check(ctx, c.AllocationID)
	}
	return c, nil
}

// check checks the claims of a token whose signature verified.
func (v *Verifier) check(c Claims) error {
	if !slices.Contains(c.Audience, v.Audience) {
		return refused(ReasonAudience, "want %s", quote(v.Audience))
	}
	if c.Namespace != v.Namespace {
		return refused(ReasonNamespace, "%s, want %s", quote(c.Namespace), quote(v.Namespace))
	}
	if c.JobID != v.JobID {
		return refused(ReasonJob, "%s, want %s", quote(c.JobID), quote(v.JobID))
	}
	if v.Issuer != "" && c.Issuer != v.Issuer {
		return refused(ReasonIssuer, "%s, want %s", quote(c.Issuer), quote(v.Issuer))
	}
	now := time.Now()
	if v.Now != nil {
		now = v.Now()
	}
	leeway := v.Leeway
	switch {
	case leeway == 0:
		leeway = DefaultLeeway
	case leeway < 0:
		leeway = 0
	}
	if !c.NotBefore.IsZero() && now.Add(leeway).Before(c.NotBefore) {
		return refused(ReasonNotYetValid, "nbf %s, now %s", stamp(c.NotBefore), stamp(now))
	}
	if !c.IssuedAt.IsZero() && now.Add(leeway).Before(c.IssuedAt) {
		return refused(ReasonNotYetValid, "iat %s, now %s", stamp(c.IssuedAt), stamp(now))
	}
	switch {
	case !c.Expiry.IsZero():
		if !now.Add(-leeway).Before(c.Expiry) {
			return refused(ReasonExpired, "exp %s, now %s", stamp(c.Expiry), stamp(now))
		}
	case v.MaxAge <= 0:
		return refused(ReasonNoExpiry, "give the identity a ttl")
	case c.IssuedAt.IsZero():
		return refused(ReasonNoExpiry, "and no iat to bound its age")
	case !now.Add(-leeway).Before(c.IssuedAt.Add(v.MaxAge)):
		return refused(ReasonExpired, "no exp, and iat %s is older than %s", stamp(c.IssuedAt), v.MaxAge)
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
