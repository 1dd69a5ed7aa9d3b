package identity

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/nomad/api"

	"github.com/nomad-prefetch/nomad-prefetch/internal/nomadtest"
	"github.com/nomad-prefetch/nomad-prefetch/nomad"
)

// clock is a test's clock, moved by hand.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// relay is the identity the tests' verifiers expect: the prefetch job's
// "relay" identity, ttl 1h.
func relay(now time.Time) nomadtest.Identity {
	return nomadtest.Identity{
		Namespace: "infra", JobID: "prefetch", Group: "prefetch", Task: "prefetch", Name: "relay",
		Audience: []string{"nomad-prefetch-relay"}, IssuedAt: now, TTL: time.Hour,
	}
}

type fixture struct {
	nomad *nomadtest.Server
	clock *clock
	keys  *Keys
	v     *Verifier
}

// setup starts a fake Nomad and a Verifier of its keys, through the
// project's Nomad client.
func setup(t *testing.T) *fixture {
	t.Helper()
	s := nomadtest.StartT(t, nomadtest.Options{})
	c, err := nomad.NewClient(&api.Config{Address: s.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := newClock()
	keys := NewKeys(c, KeysOptions{Now: clk.Now})
	return &fixture{nomad: s, clock: clk, keys: keys, v: &Verifier{
		Keys: keys, Audience: "nomad-prefetch-relay", Namespace: "infra", JobID: "prefetch", Now: clk.Now,
	}}
}

func (f *fixture) issue(mod func(*nomadtest.Identity)) string {
	id := relay(f.clock.Now())
	if mod != nil {
		mod(&id)
	}
	return f.nomad.IssueIdentity(id)
}

func (f *fixture) fetches(t *testing.T, want int) {
	t.Helper()
	if got := f.nomad.JWKSRequests(); got != want {
		t.Fatalf("Nomad's keys fetched %d times, want %d", got, want)
	}
}

func refusal(t *testing.T, err error, want Reason) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("got %v, want a refusal (%s)", err, want)
	}
	if re.Reason != want {
		t.Fatalf("refused as %q (%v), want %q", re.Reason, err, want)
	}
}

func TestVerifyAcceptsTheJobsIdentity(t *testing.T) {
	t.Parallel()
	f := setup(t)
	tok := f.issue(func(id *nomadtest.Identity) { id.AllocationID = "5f4e7e1c-0d0f-4c4e-9d0b-9a8f1c1e2d3a" })
	c, err := f.v.Verify(t.Context(), tok)
	if err != nil {
		t.Fatal(err)
	}
	now := f.clock.Now()
	want := Claims{
		Namespace: "infra", JobID: "prefetch", AllocationID: "5f4e7e1c-0d0f-4c4e-9d0b-9a8f1c1e2d3a", Task: "prefetch",
		Subject: "global:infra:prefetch:prefetch:prefetch:relay", Audience: []string{"nomad-prefetch-relay"},
		IssuedAt: now, NotBefore: now, Expiry: now.Add(time.Hour), KeyID: f.nomad.IdentityKeyID(),
	}
	if !equalClaims(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
	// The second is answered from the cache.
	if _, err := f.v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	f.fetches(t, 1)
}

func equalClaims(a, b Claims) bool {
	return a.Namespace == b.Namespace && a.JobID == b.JobID && a.AllocationID == b.AllocationID && a.Task == b.Task &&
		a.Subject == b.Subject && a.Issuer == b.Issuer && strings.Join(a.Audience, ",") == strings.Join(b.Audience, ",") &&
		a.IssuedAt.Equal(b.IssuedAt) && a.NotBefore.Equal(b.NotBefore) && a.Expiry.Equal(b.Expiry) && a.KeyID == b.KeyID
}

// unsigned is a token with alg none and the fake's kid.
func unsigned(t *testing.T, f *fixture) string {
	t.Helper()
	hdr, _ := json.Marshal(map[string]string{"alg": "none", "kid": f.nomad.IdentityKeyID(), "typ": "JWT"})
	body, err := json.Marshal(nomadtest.IdentityClaims(relay(f.clock.Now())))
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(hdr) + "." + enc(body) + "."
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	f := setup(t)
	kid := f.nomad.IdentityKeyID()
	now := f.clock.Now()
	pubDER, err := x509.MarshalPKIXPublicKey(&nomadtest.Key(0).PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	forged := func(key any, alg jose.SignatureAlgorithm) string {
		return nomadtest.SignIdentity(key, alg, kid, relay(now))
	}
	with := func(mod func(*nomadtest.Identity)) string { return f.issue(mod) }
	cases := []struct {
		name  string
		token string
		want  Reason
	}{
		{"another key", forged(nomadtest.Key(1), jose.RS256), ReasonSignature},
		{"HS256 keyed with the public key", forged(pubDER, jose.HS256), ReasonAlgorithm},
		{"HS256 keyed with the modulus", forged(nomadtest.Key(0).N.Bytes(), jose.HS256), ReasonAlgorithm},
		{"none", unsigned(t, f), ReasonAlgorithm},
		{"RS384", forged(nomadtest.Key(0), jose.RS384), ReasonAlgorithm},
		{"PS256", forged(nomadtest.Key(0), jose.PS256), ReasonAlgorithm},
		{"another audience", with(func(id *nomadtest.Identity) { id.Audience = []string{"vault.io"} }), ReasonAudience},
		{"the default identity's audience", with(func(id *nomadtest.Identity) { id.Audience = nil }), ReasonAudience},
		{"another job", with(func(id *nomadtest.Identity) { id.JobID = "web" }), ReasonJob},
		{"another namespace", with(func(id *nomadtest.Identity) { id.Namespace = "default" }), ReasonNamespace},
		{"expired", with(func(id *nomadtest.Identity) { id.IssuedAt = now.Add(-2 * time.Hour) }), ReasonExpired},
		{"expired past the leeway", with(func(id *nomadtest.Identity) { id.IssuedAt = now.Add(-time.Hour - DefaultLeeway) }), ReasonExpired},
		{"not valid yet", with(func(id *nomadtest.Identity) { id.IssuedAt = now.Add(5 * time.Minute) }), ReasonNotYetValid},
		{"nbf ahead", with(func(id *nomadtest.Identity) { id.NotBefore = now.Add(time.Minute) }), ReasonNotYetValid},
		{"no exp", with(func(id *nomadtest.Identity) { id.TTL = 0 }), ReasonNoExpiry},
		{"a kid Nomad never served", with(func(id *nomadtest.Identity) { id.KeyID = "f00dfeed-0000-4000-8000-000000000000" }), ReasonUnknownKey},
		{"no kid", noKid(t, now), ReasonUnknownKey},
		{"garbage", "not a token", ReasonMalformed},
		{"three garbage parts", "a.b.c", ReasonMalformed},
		{"JSON serialization", `{"payload":"e30","signatures":[]}`, ReasonMalformed},
		{"a header only", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256"}`)), ReasonMalformed},
		{"oversized", strings.Repeat("a", MaxToken+1), ReasonTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.v.Verify(t.Context(), tc.token)
			refusal(t, err, tc.want)
			if len(tc.token) > 20 && strings.Contains(err.Error(), tc.token[len(tc.token)-20:]) {
				t.Errorf("the error echoes the token: %v", err)
			}
		})
	}
	f.fetches(t, 1) // the unknown kid's refetch came too soon after the first
}

// noKid is a token signed by the fake's key without a kid header.
func noKid(t *testing.T, now time.Time) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: nomadtest.Key(0)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(nomadtest.IdentityClaims(relay(now)))
	jws, err := sig.Sign(body)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyTimes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	now := f.clock.Now()
	tok := f.issue(nil) // iat now, exp now+1h
	cases := []struct {
		name   string
		at     time.Time
		maxAge time.Duration
		leeway time.Duration
		token  string
		want   Reason // "": accepted
	}{
		{"within", now.Add(30 * time.Minute), 0, 0, tok, ""},
		{"iat a little ahead of our clock", now.Add(-10 * time.Second), 0, 0, tok, ""},
		{"iat ahead, no leeway", now.Add(-10 * time.Second), 0, -1, tok, ReasonNotYetValid},
		{"at exp, within the leeway", now.Add(time.Hour + 10*time.Second), 0, 0, tok, ""},
		{"at exp, no leeway", now.Add(time.Hour), 0, -1, tok, ReasonExpired},
		{"past exp and the leeway", now.Add(time.Hour + DefaultLeeway), 0, 0, tok, ReasonExpired},
		{"no exp, MaxAge set, young", now.Add(time.Hour), 2 * time.Hour, 0, f.issue(func(id *nomadtest.Identity) { id.TTL = 0 }), ""},
		{"no exp, older than MaxAge", now.Add(3 * time.Hour), 2 * time.Hour, 0, f.issue(func(id *nomadtest.Identity) { id.TTL = 0 }), ReasonExpired},
		{"no exp, no MaxAge", now, 0, 0, f.issue(func(id *nomadtest.Identity) { id.TTL = 0 }), ReasonNoExpiry},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := *f.v
			v.Now = func() time.Time { return tc.at }
			v.MaxAge, v.Leeway = tc.maxAge, tc.leeway
			_, err := v.Verify(t.Context(), tc.token)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			refusal(t, err, tc.want)
		})
	}
}

func TestVerifyChecksTheIssuerWhenSet(t *testing.T) {
	t.Parallel()
	f := setup(t)
	v := *f.v
	v.Issuer = "https://nomad.example.com"
	if _, err := v.Verify(t.Context(), f.issue(func(id *nomadtest.Identity) { id.Issuer = "https://nomad.example.com" })); err != nil {
		t.Fatal(err)
	}
	_, err := v.Verify(t.Context(), f.issue(nil))
	refusal(t, err, ReasonIssuer)
}

func TestVerifyNoToken(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if _, err := f.v.Verify(t.Context(), ""); !errors.Is(err, ErrNoToken) {
		t.Fatalf("got %v, want ErrNoToken", err)
	}
	f.fetches(t, 0)
}

func TestVerifierWithoutExpectationsRefusesEverything(t *testing.T) {
	t.Parallel()
	f := setup(t)
	for _, v := range []Verifier{{Keys: f.keys, Namespace: "infra", JobID: "prefetch"}, {Keys: f.keys, Audience: "a", JobID: "prefetch"}, {Keys: f.keys, Audience: "a", Namespace: "infra"}, {Audience: "a", Namespace: "infra", JobID: "prefetch"}} {
		_, err := v.Verify(t.Context(), f.issue(nil))
		var re *RefusedError
		if err == nil || errors.As(err, &re) {
			t.Errorf("%+v: got %v, want a configuration error", v, err)
		}
	}
}

// Nomad rotates its key: the first token of the new kid makes the set be
// fetched again, once; a flood of made-up kids fetches nothing more until
// MinInterval has passed, and then once.
func TestUnknownKidRefetchesAtMostOncePerInterval(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if _, err := f.v.Verify(t.Context(), f.issue(nil)); err != nil {
		t.Fatal(err)
	}
	f.fetches(t, 1)

	newKid := f.nomad.RotateIdentityKey()
	rotated := f.issue(nil)
	_, err := f.v.Verify(t.Context(), rotated)
	refusal(t, err, ReasonUnknownKey) // too soon after the first fetch
	f.fetches(t, 1)

	f.clock.Add(30 * time.Second)
	c, err := f.v.Verify(t.Context(), rotated)
	if err != nil {
		t.Fatal(err)
	}
	if c.KeyID != newKid {
		t.Errorf("kid %q, want %q", c.KeyID, newKid)
	}
	f.fetches(t, 2)

	for i := range 200 {
		tok := f.issue(func(id *nomadtest.Identity) {
			id.KeyID = strings.Repeat("x", i%7) + "stranger" + string(rune('a'+i%26))
		})
		_, err := f.v.Verify(t.Context(), tok)
		refusal(t, err, ReasonUnknownKey)
		if i%50 == 0 {
			f.clock.Add(5 * time.Second)
		}
	}
	f.fetches(t, 2)
	f.clock.Add(30 * time.Second)
	for range 20 {
		_, err := f.v.Verify(t.Context(), f.issue(func(id *nomadtest.Identity) { id.KeyID = "stranger" }))
		refusal(t, err, ReasonUnknownKey)
	}
	f.fetches(t, 3)
	// The old key still verifies: Nomad keeps a rotated key in the set.
	if _, err := f.v.Verify(t.Context(), nomadtest.SignIdentity(nomadtest.Key(0), jose.RS256, nomadtest.KeyID(nomadtest.Key(0)), relay(f.clock.Now()))); err != nil {
		t.Fatal(err)
	}
	f.fetches(t, 3)
}

// A key Nomad no longer serves stops verifying once the set is older than
// MaxAge.
func TestOldSetIsFetchedAgain(t *testing.T) {
	t.Parallel()
	f := setup(t)
	oldKid := f.nomad.IdentityKeyID()
	tok := f.issue(nil)
	if _, err := f.v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	f.nomad.RotateIdentityKey()
	f.nomad.SetJWKS(without(t, f.nomad.JWKS(), oldKid))
	f.clock.Add(9 * time.Minute)
	if _, err := f.v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	f.fetches(t, 1)
	f.clock.Add(time.Minute)
	_, err := f.v.Verify(t.Context(), tok)
	refusal(t, err, ReasonUnknownKey)
	f.fetches(t, 2)
}

// without is a key set less the key kid.
func without(t *testing.T, set []byte, kid string) []byte {
	t.Helper()
	var s struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(set, &s); err != nil {
		t.Fatal(err)
	}
	kept := s.Keys[:0]
	for _, k := range s.Keys {
		if k["kid"] != kid {
			kept = append(kept, k)
		}
	}
	s.Keys = kept
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A Nomad that fails or is gone leaves the keys held in use; it is asked
// again no more than once per MinInterval.
func TestNomadDownKeepsTheCachedKeys(t *testing.T) {
	t.Parallel()
	f := setup(t)
	if err := f.keys.Refresh(t.Context()); err != nil {
		t.Fatal(err)
	}
	f.nomad.SetFailStatus(500)
	f.clock.Add(11 * time.Minute)
	for range 10 {
		if _, err := f.v.Verify(t.Context(), f.issue(nil)); err != nil {
			t.Fatal(err)
		}
	}
	f.fetches(t, 2) // the good one, then one failed refresh
	f.clock.Add(30 * time.Second)
	if _, err := f.v.Verify(t.Context(), f.issue(nil)); err != nil {
		t.Fatal(err)
	}
	f.fetches(t, 3)
	if err := f.keys.Refresh(t.Context()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("Refresh: got %v, want Nomad's 500", err)
	}

	f.nomad.Close()
	f.clock.Add(time.Minute)
	if _, err := f.v.Verify(t.Context(), f.issue(nil)); err != nil {
		t.Fatal(err)
	}
}

// Before any good fetch there is nothing to verify with: the error says
// the keys are unavailable, not that the token is bad.
func TestNomadDownAtStart(t *testing.T) {
	t.Parallel()
	f := setup(t)
	f.nomad.SetFailStatus(503)
	_, err := f.v.Verify(t.Context(), f.issue(nil))
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("got %v, want an *UnavailableError", err)
	}
	var he *nomad.HTTPError
	if !errors.As(err, &he) || he.Status != 503 {
		t.Errorf("got %v, want Nomad's 503 in it", err)
	}
	f.nomad.SetFailStatus(0)
	_, err = f.v.Verify(t.Context(), f.issue(nil))
	if !errors.As(err, &ue) {
		t.Fatalf("within MinInterval: got %v, want an *UnavailableError", err)
	}
	f.clock.Add(30 * time.Second)
	if _, err := f.v.Verify(t.Context(), f.issue(nil)); err != nil {
		t.Fatal(err)
	}
	f.fetches(t, 2)
}

func TestOversizedKeySetIsRefused(t *testing.T) {
	t.Parallel()
	f := setup(t)
	good := f.nomad.JWKS()
	huge := append([]byte(`{"keys":[],"pad":"`), strings.Repeat("x", nomad.MaxJWKS)...)
	huge = append(huge, `"}`...)
	f.nomad.SetJWKS(huge)
	_, err := f.v.Verify(t.Context(), f.issue(nil))
	var ue *UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, nomad.ErrJWKSTooLarge) {
		t.Fatalf("got %v, want an *UnavailableError of nomad.ErrJWKSTooLarge", err)
	}
	if !strings.Contains(err.Error(), "larger than 1024 KiB") {
		t.Errorf("the error does not say the set is too large: %v", err)
	}
	// After a good set, an oversized one keeps it.
	f.nomad.SetJWKS(good)
	f.clock.Add(30 * time.Second)
	if _, err := f.v.Verify(t.Context(), f.issue(nil)); err != nil {
		t.Fatal(err)
	}
	f.nomad.SetJWKS(huge)
	if err := f.keys.Refresh(t.Context()); !errors.Is(err, nomad.ErrJWKSTooLarge) {
		t.Fatalf("Refresh: got %v, want nomad.ErrJWKSTooLarge", err)
	}
	if _, err := f.v.Verify(t.Context(), f.issue(nil)); err != nil {
		t.Fatal(err)
	}
}

// request is a GET with header.
func request(header map[string]string) *http.Request {
	r, err := http.NewRequest(http.MethodGet, "http://127.0.0.1/v1/event/stream", nil)
	if err != nil {
		panic(err)
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	return r
}

func TestFromRequest(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		header map[string]string
		want   string
	}{
		{"X-Nomad-Token", map[string]string{"X-Nomad-Token": " tok "}, "tok"},
		{"bearer", map[string]string{"Authorization": "Bearer tok"}, "tok"},
		{"bearer, any case", map[string]string{"Authorization": "bearer  tok"}, "tok"},
		{"X-Nomad-Token first", map[string]string{"X-Nomad-Token": "a", "Authorization": "Bearer b"}, "a"},
		{"basic is not a token", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, ""},
		{"a bare Authorization", map[string]string{"Authorization": "tok"}, ""},
		{"none", nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := request(tc.header)
			if got := FromRequest(r); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseUnverified(t *testing.T) {
	t.Parallel()
	now := time.Now()
	id := relay(now.Add(-3 * time.Hour)) // long expired: not checked
	own := nomadtest.SignIdentity(nomadtest.Key(1), jose.RS256, "k1", id)
	c, err := ParseUnverified(own)
	if err != nil {
		t.Fatal(err)
	}
	if c.Namespace != "infra" || c.JobID != "prefetch" || c.Task != "prefetch" || c.KeyID != "k1" ||
		!c.Expiry.Equal(id.IssuedAt.Add(time.Hour).Truncate(time.Second)) || len(c.Audience) != 1 || c.Audience[0] != "nomad-prefetch-relay" {
		t.Errorf("got %+v", c)
	}
	if _, err := ParseUnverified(""); !errors.Is(err, ErrNoToken) {
		t.Errorf("empty: got %v, want ErrNoToken", err)
	}
	_, err = ParseUnverified("garbage")
	refusal(t, err, ReasonMalformed)
}

// The key set keeps the public signing keys it can verify with, and only
// those; a set with none is an error (the last good set is kept).
func TestParseSet(t *testing.T) {
	t.Parallel()
	k := nomadtest.Key(0)
	n := base64.RawURLEncoding.EncodeToString(k.N.Bytes())
	d := base64.RawURLEncoding.EncodeToString(k.D.Bytes())
	rsaKey := func(extra string) string {
		return `{"kty":"RSA","alg":"RS256","use":"sig","kid":"k","n":"` + n + `","e":"AQAB"` + extra + `}`
	}
	cases := []struct {
		name string
		set  string
		want int // keys kept; -1: an error
	}{
		{"Nomad's", `{"keys":[` + rsaKey("") + `]}`, 1},
		{"an Ed25519 key as well", `{"keys":[` + rsaKey("") + `,{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"e","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`, 2},
		{"an unknown type beside it", `{"keys":[` + rsaKey("") + `,{"kty":"XYZ","kid":"x"}]}`, 1},
		{"a symmetric key", `{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}]}`, -1},
		{"a private key", `{"keys":[` + rsaKey(`,"d":"`+d+`"`) + `]}`, -1},
		{"an encryption key", `{"keys":[` + strings.Replace(rsaKey(""), `"use":"sig"`, `"use":"enc"`, 1) + `]}`, -1},
		{"no kid", `{"keys":[` + strings.Replace(rsaKey(""), `"kid":"k",`, "", 1) + `]}`, -1},
		{"a short RSA key", `{"keys":[{"kty":"RSA","kid":"k","n":"` + base64.RawURLEncoding.EncodeToString(k.N.Bytes()[:64]) + `","e":"AQAB"}]}`, -1},
		{"empty", `{"keys":[]}`, -1},
		{"not JSON", `<html>`, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := parseSet([]byte(tc.set))
			if tc.want < 0 {
				if err == nil {
					t.Fatalf("got %d keys, want an error", len(set))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(set) != tc.want {
				t.Errorf("got %d keys, want %d", len(set), tc.want)
			}
		})
	}
}
