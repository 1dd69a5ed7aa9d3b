package identity

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// MaxToken bounds a token: Nomad's are about 1 KB (an RSA signature is
// 342 characters); a larger one is refused before it is decoded.
const MaxToken = 16 << 10

// algorithms are the signatures accepted: Nomad's RS256, and ES256 and
// EdDSA, which cost nothing more to allow (Nomad before 1.7 signed with
// Ed25519). Never none, never an HMAC: its secret would be a public key.
var algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.ES256, jose.EdDSA}

// Claims is what a workload identity says. Times are zero when absent.
type Claims struct {
	Namespace    string // nomad_namespace
	JobID        string // nomad_job_id
	AllocationID string // nomad_allocation_id
	Task         string // nomad_task
	Subject      string // sub: region:namespace:job:group:task:identity
	Issuer       string // iss: set only when Nomad has an oidc_issuer
	Audience     []string
	IssuedAt     time.Time
	NotBefore    time.Time
	Expiry       time.Time
	KeyID        string // the kid header: the key that signed it
}

// payload is a token's JSON, as Nomad encodes its IdentityClaims.
type payload struct {
	Namespace    string `json:"nomad_namespace"`
	JobID        string `json:"nomad_job_id"`
	AllocationID string `json:"nomad_allocation_id"`
	Task         string `json:"nomad_task"`
	jwt.Claims
}

func (p payload) claims(kid string) Claims {
	c := Claims{
		Namespace: p.Namespace, JobID: p.JobID, AllocationID: p.AllocationID, Task: p.Task,
		Subject: p.Subject, Issuer: p.Issuer, Audience: slices.Clone([]string(p.Audience)), KeyID: kid,
	}
	for _, t := range []struct {
		to   *time.Time
		from *jwt.NumericDate
	}{{&c.IssuedAt, p.IssuedAt}, {&c.NotBefore, p.NotBefore}, {&c.Expiry, p.Expiry}} {
		if t.from != nil {
			*t.to = t.from.Time()
		}
	}
	return c
}

// parse checks a token's size and form and returns it with its one header.
func parse(token string) (*jwt.JSONWebToken, jose.Header, error) {
	if token == "" {
		return nil, jose.Header{}, ErrNoToken
	}
	if len(token) > MaxToken {
		return nil, jose.Header{}, refused(ReasonTooLarge, "%d bytes, at most %d", len(token), MaxToken)
	}
	tok, err := jwt.ParseSigned(token, algorithms)
	if err != nil {
		if alg, ok := headerAlg(token); ok && !slices.Contains(algorithms, jose.SignatureAlgorithm(alg)) {
			return nil, jose.Header{}, refused(ReasonAlgorithm, "%s, want one of %v", quote(alg), algorithms)
		}
		return nil, jose.Header{}, &RefusedError{Reason: ReasonMalformed}
	}
	if len(tok.Headers) != 1 {
		return nil, jose.Header{}, &RefusedError{Reason: ReasonMalformed}
	}
	return tok, tok.Headers[0], nil
}

// headerAlg is the alg a token's header names, read only to say why it
// was refused.
func headerAlg(token string) (string, bool) {
	h, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", false
	}
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", false
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &hdr) != nil {
		return "", false
	}
	return hdr.Alg, true
}

// ParseUnverified returns a token's claims without checking its signature
// or its times: for the agent's own token, to learn the namespace and job ID
// to expect of its peers. Never trust a caller's token read this way. Its
// errors are Verify's: ErrNoToken, a *RefusedError of the token's form.
func ParseUnverified(token string) (Claims, error) {
	tok, hdr, err := parse(token)
	if err != nil {
		return Claims{}, err
	}
	var p payload
	if err := tok.UnsafeClaimsWithoutVerification(&p); err != nil {
		return Claims{}, &RefusedError{Reason: ReasonMalformed, Detail: "its claims do not decode"}
	}
	return p.claims(hdr.KeyID), nil
}

// FromRequest returns the token a request presents: X-Nomad-Token, as
// Nomad's own API takes it, else an Authorization bearer token; "" when
// there is none.
func FromRequest(r *http.Request) string {
	if t := strings.TrimSpace(r.Header.Get("X-Nomad-Token")); t != "" {
		return t
	}
	scheme, t, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if ok && strings.EqualFold(scheme, "Bearer") {
		return strings.TrimSpace(t)
	}
	return ""
}
