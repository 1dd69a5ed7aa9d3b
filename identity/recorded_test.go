package identity

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// recordedSource serves the key set a real Nomad served.
type recordedSource []byte

func (s recordedSource) JWKS(context.Context) ([]byte, error) { return s, nil }

func readRecorded(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/nomad-2.0.5/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// The identities a real Nomad 2.0.5 (dev agent, ACLs on) wrote into a
// task's secrets directory, verified against the key set it served at
// /.well-known/jwks.json (testdata/nomad-2.0.5, recorded 2026-12-06 from job
// relay-probe: the default identity, and one named relay with
// aud = ["nomad-prefetch-relay"] and ttl = "1h").
func TestVerifyRecordedIdentities(t *testing.T) {
	t.Parallel()
	keys := NewKeys(recordedSource(readRecorded(t, "jwks.json")), KeysOptions{})
	issued := time.Unix(1796561653, 0) // their iat
	v := &Verifier{Keys: keys, Audience: "nomad-prefetch-relay", Namespace: "default", JobID: "relay-probe",
		Now: func() time.Time { return issued.Add(time.Minute) }}
	relay := readRecorded(t, "relay-identity.jwt")
	c, err := v.Verify(context.Background(), relay)
	if err != nil {
		t.Fatalf("the recorded relay identity: %v", err)
	}
	if c.Task != "probe" || c.AllocationID != "a288630b-320f-4f1c-51ae-647f259bb58a" || !c.Expiry.Equal(issued.Add(time.Hour)) ||
		c.Subject != "global:default:relay-probe:g:probe:relay" {
		t.Errorf("claims: %+v", c)
	}
	if own, err := ParseUnverified(relay); err != nil || own.JobID != "relay-probe" || own.Namespace != "default" {
		t.Errorf("ParseUnverified: %+v, %v", own, err)
	}
	// The default identity (aud nomadproject.io, no exp) is no relay identity.
	_, err = v.Verify(context.Background(), readRecorded(t, "default-identity.jwt"))
	refusal(t, err, ReasonAudience)
	// An hour and more later, the relay identity has expired (Nomad renews it).
	late := *v
	late.Now = func() time.Time { return issued.Add(time.Hour + time.Minute) }
	_, err = late.Verify(context.Background(), relay)
	refusal(t, err, ReasonExpired)
}

// switchingSource serves one recorded key set, then (once rotated is set)
// another, as Nomad does across a keyring rotation.
type switchingSource struct {
	before, after []byte
	rotated       bool
}

func (s *switchingSource) JWKS(context.Context) ([]byte, error) {
	if s.rotated {
		return s.after, nil
	}
	return s.before, nil
}

// Across a keyring rotation of a real Nomad 2.0.5 (testdata/nomad-2.0.5/
// rotation): an identity signed with the new key, unknown to the set held,
// has the set fetched again (not after the 16 days Nomad's Cache-Control
// allows, nor after MaxAge), and an identity signed before the rotation
// still verifies against the new set, which keeps the old key.
func TestVerifyAcrossRecordedRotation(t *testing.T) {
	t.Parallel()
	src := &switchingSource{before: []byte(readRecorded(t, "rotation/jwks-before.json")), after: []byte(readRecorded(t, "rotation/jwks-after.json"))}
	now := time.Unix(1796645520, 0) // just after both were issued
	clock := func() time.Time { return now }
	keys := NewKeys(src, KeysOptions{Now: clock})
	v := &Verifier{Keys: keys, Audience: "nomad-prefetch-relay", Namespace: "default", JobID: "relay-probe", Now: clock}
	before, after := readRecorded(t, "rotation/relay-before.jwt"), readRecorded(t, "rotation/relay-after.jwt")
	if _, err := v.Verify(context.Background(), before); err != nil {
		t.Fatalf("the identity signed before the rotation, against the set before it: %v", err)
	}
	src.rotated = true
	now = now.Add(time.Minute) // past MinInterval, well within MaxAge
	c, err := v.Verify(context.Background(), after)
	if err != nil {
		t.Fatalf("the identity signed after the rotation (a kid the set held lacks): %v", err)
	}
	if c.AllocationID != "7ef71734-fbef-7a92-9317-c5009b37110a" {
		t.Errorf("claims: %+v", c)
	}
	if _, err := v.Verify(context.Background(), before); err != nil {
		t.Fatalf("the identity signed before the rotation, against the set after it: %v", err)
	}
}
