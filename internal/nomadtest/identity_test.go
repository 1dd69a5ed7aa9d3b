package nomadtest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The key set is served without a token, in the shape assumed (identity.go),
// and verifies what IssueIdentity signs; a rotation adds a key and keeps the
// old one.
func TestJWKSVerifiesIssuedIdentities(t *testing.T) {
	t.Parallel()
	s := StartT(t, Options{Authorize: func(string) bool { return false }})
	get := func() jose.JSONWebKeySet {
		t.Helper()
		resp, err := http.Get(s.URL + "/.well-known/jwks.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(b, &set); err != nil {
			t.Fatal(err)
		}
		return set
	}
	set := get()
	if len(set.Keys) != 1 || set.Keys[0].Algorithm != "RS256" || set.Keys[0].Use != "sig" || set.Keys[0].KeyID != s.IdentityKeyID() || !set.Keys[0].IsPublic() {
		t.Fatalf("key set %+v", set)
	}
	now := time.Now()
	tok := s.IssueIdentity(Identity{Namespace: "infra", Task: "prefetch", Name: "relay", Audience: []string{"nomad-prefetch-relay"}, IssuedAt: now, TTL: time.Hour})
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if h := parsed.Headers[0]; h.KeyID != s.IdentityKeyID() || h.ExtraHeaders["typ"] != "JWT" {
		t.Errorf("header %+v", h)
	}
	var c struct {
		Namespace string `json:"nomad_namespace"`
		JobID     string `json:"nomad_job_id"`
		Alloc     string `json:"nomad_allocation_id"`
		Task      string `json:"nomad_task"`
		jwt.Claims
	}
	if err := parsed.Claims(&set, &c); err != nil {
		t.Fatal(err)
	}
	if c.Namespace != "infra" || c.JobID != "prefetch" || c.Task != "prefetch" || len(c.Alloc) != 36 ||
		c.Subject != "global:infra:prefetch:prefetch:prefetch:relay" || c.Expiry.Time().Unix() != now.Add(time.Hour).Unix() {
		t.Errorf("claims %+v", c)
	}
	var raw map[string]any
	_ = parsed.UnsafeClaimsWithoutVerification(&raw)
	if raw["aud"] != "nomad-prefetch-relay" {
		t.Errorf("aud %#v, want one audience as a string, as go-jose encodes it", raw["aud"])
	}

	old := s.IdentityKeyID()
	kid := s.RotateIdentityKey()
	set = get()
	if len(set.Keys) != 2 || len(set.Key(old)) != 1 || len(set.Key(kid)) != 1 || kid == old {
		t.Fatalf("after the rotation: %+v", set)
	}
	if got := s.JWKSRequests(); got != 2 {
		t.Errorf("%d requests counted, want 2", got)
	}
}
