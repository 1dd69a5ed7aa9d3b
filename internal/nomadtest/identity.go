package nomadtest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Workload identities (identity.go): GET /.well-known/jwks.json serves the
// public keys of the fake's keyring, and IssueIdentity mints a workload
// identity signed by its active key, as Nomad ≥ 1.7 signs them (RS256, the
// key's ID in the kid header).
//
// As recorded from Nomad 2.0.5 (identity/testdata/nomad-2.0.5): the key
// set's shape, {"keys":[{"use":"sig","kty":"RSA","kid":"<uuid>","alg":"RS256","n":"…","e":"AQAB"}]},
// served without a token; the claims (nomad_namespace, nomad_job_id,
// nomad_allocation_id, nomad_task, sub "region:namespace:job:group:task:identity",
// aud a string when there is one audience, iat = nbf, exp only with a ttl);
// a header of alg, kid and typ "JWT". Nomad also sets jti, which the fake
// leaves out (nothing reads it). A rotation (RotateIdentityKey) lists the
// new key first and keeps the old one, as Nomad 2.0.5 did after
// PUT /v1/operator/keyring/rotate (identity/testdata/nomad-2.0.5/rotation).
// A failing Nomad's answer (SetFailStatus) is as recorded for a server
// without a leader (transcripts H1): 500, "No cluster leader" as text.

// Identity is what a workload identity says: the claims Nomad puts in one.
// Zero fields take the defaults noted.
type Identity struct {
	Namespace    string   // "default"
	JobID        string   // "prefetch"
	Group        string   // "prefetch" (in sub only)
	Task         string   // "prefetch"
	Name         string   // the identity block's name, "default" (in sub only)
	AllocationID string   // a fresh UUID
	Region       string   // "global" (in sub only)
	Audience     []string // ["nomadproject.io"], the default identity's
	Issuer       string   // none (Nomad sets one only with oidc_issuer)
	IssuedAt     time.Time
	NotBefore    time.Time     // IssuedAt
	TTL          time.Duration // > 0: exp is IssuedAt+TTL; 0: no exp, as the default identity
	// KeyID, when set, replaces the signing key's ID in the header (tests
	// of a kid Nomad never served).
	KeyID string
}

// nomadClaims is the payload as Nomad encodes its IdentityClaims.
type nomadClaims struct {
	Namespace    string `json:"nomad_namespace"`
	JobID        string `json:"nomad_job_id"`
	AllocationID string `json:"nomad_allocation_id"`
	Task         string `json:"nomad_task,omitempty"`
	jwt.Claims
}

// keyPool holds the RSA keys every fake of the process signs with: 2048-bit
// keys take a while to generate, so each is generated once.
var keyPool struct {
	mu   sync.Mutex
	keys []*rsa.PrivateKey
}

// Key returns the i-th key of the process's pool (generated on first use).
// A fake's keyring starts with Key(0); each RotateIdentityKey moves to the
// next. Tests sign forgeries with a key the fake has not served.
func Key(i int) *rsa.PrivateKey {
	keyPool.mu.Lock()
	defer keyPool.mu.Unlock()
	for len(keyPool.keys) <= i {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keyPool.keys = append(keyPool.keys, k)
	}
	return keyPool.keys[i]
}

// KeyID is the kid the fake gives a key: a UUID made from its modulus.
func KeyID(k *rsa.PrivateKey) string {
	s := sha256.Sum256(k.N.Bytes())
	return fmt.Sprintf("%x-%x-%x-%x-%x", s[0:4], s[4:6], s[6:8], s[8:10], s[10:16])
}

// idState is the fake's keyring.
type idState struct {
	mu       sync.Mutex
	active   int   // the pool index signing
	served   []int // the pool indexes in the key set, newest first
	raw      []byte
	requests int
}

func (s *Server) ids() *idState {
	s.idOnce.Do(func() { s.idS = &idState{served: []int{0}} })
	return s.idS
}

func (s *Server) routeIdentity(mux *http.ServeMux) {
	mux.HandleFunc("GET /.well-known/jwks.json", s.jwks)
}

// jwks answers the key set; it asks for no token.
func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	id := s.ids()
	id.mu.Lock()
	id.requests++ // a failed one too (JWKSRequests)
	raw, served := id.raw, append([]int(nil), id.served...)
	id.mu.Unlock()
	if s.failing(w) {
		return
	}
	if raw == nil {
		raw = jwksOf(served)
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(raw)
}

type jwk struct {
	Kty string `json:"kty"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Kid string `json:"kid"`
	N   string `json:"n"`
	E   string `json:"e"`
}

func jwksOf(pool []int) []byte {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, i := range pool {
		k := Key(i)
		set.Keys = append(set.Keys, jwk{
			Kty: "RSA", Alg: "RS256", Use: "sig", Kid: KeyID(k),
			N: base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes()),
		})
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// JWKS is the key set the fake serves now.
func (s *Server) JWKS() []byte {
	id := s.ids()
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.raw != nil {
		return id.raw
	}
	return jwksOf(id.served)
}

// SetJWKS makes the fake answer raw as its key set (nil: its keyring's).
func (s *Server) SetJWKS(raw []byte) {
	id := s.ids()
	id.mu.Lock()
	defer id.mu.Unlock()
	id.raw = raw
}

// JWKSRequests counts the key set's requests, failed ones included.
func (s *Server) JWKSRequests() int {
	id := s.ids()
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.requests
}

// IdentityKeyID is the kid of the key signing now.
func (s *Server) IdentityKeyID() string {
	id := s.ids()
	id.mu.Lock()
	defer id.mu.Unlock()
	return KeyID(Key(id.active))
}

// RotateIdentityKey makes the pool's next key the signing one and lists it
// first in the key set, which keeps the old ones; it returns the new kid.
func (s *Server) RotateIdentityKey() string {
	id := s.ids()
	id.mu.Lock()
	defer id.mu.Unlock()
	id.active++
	id.served = append([]int{id.active}, id.served...)
	return KeyID(Key(id.active))
}

// IssueIdentity returns a workload identity signed by the fake's active key,
// and records its allocation as running (GET /v1/allocation/:id answers it;
// StopAllocation stops it) unless the fake holds one of that ID.
func (s *Server) IssueIdentity(c Identity) string {
	c = c.withDefaults()
	s.issuedAllocation(c.AllocationID, c.Namespace, c.JobID, c.Group)
	id := s.ids()
	id.mu.Lock()
	k := Key(id.active)
	id.mu.Unlock()
	return SignIdentity(k, jose.RS256, KeyID(k), c)
}

// withDefaults is c with the zero fields given the defaults Identity notes
// (an allocation ID drawn when there is none).
func (c Identity) withDefaults() Identity {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&c.Namespace, "default")
	def(&c.JobID, "prefetch")
	def(&c.Group, "prefetch")
	def(&c.Task, "prefetch")
	def(&c.Name, "default")
	def(&c.Region, "global")
	def(&c.AllocationID, newUUID())
	if c.Audience == nil {
		c.Audience = []string{"nomadproject.io"}
	}
	if c.IssuedAt.IsZero() {
		c.IssuedAt = time.Now()
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = c.IssuedAt
	}
	return c
}

// SignIdentity returns c signed with key as alg, kid in its header (or
// c.KeyID when set): IssueIdentity's signing, for the forgeries a verifier
// must refuse (another key, an HMAC with []byte as the secret).
func SignIdentity(key any, alg jose.SignatureAlgorithm, kid string, c Identity) string {
	if c.KeyID != "" {
		kid = c.KeyID
	}
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader(jose.HeaderKey("kid"), kid)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		panic(err)
	}
	tok, err := jwt.Signed(sig).Claims(IdentityClaims(c)).Serialize()
	if err != nil {
		panic(err)
	}
	return tok
}

// IdentityClaims returns c's payload as Nomad encodes it, defaults applied.
func IdentityClaims(c Identity) any {
	c = c.withDefaults()
	cl := nomadClaims{
		Namespace: c.Namespace, JobID: c.JobID, AllocationID: c.AllocationID, Task: c.Task,
		Claims: jwt.Claims{
			Issuer:    c.Issuer,
			Subject:   strings.Join([]string{c.Region, c.Namespace, c.JobID, c.Group, c.Task, c.Name}, ":"),
			Audience:  jwt.Audience(c.Audience),
			IssuedAt:  jwt.NewNumericDate(c.IssuedAt),
			NotBefore: jwt.NewNumericDate(c.NotBefore),
		},
	}
	if c.TTL > 0 {
		cl.Expiry = jwt.NewNumericDate(c.IssuedAt.Add(c.TTL))
	}
	return cl
}
