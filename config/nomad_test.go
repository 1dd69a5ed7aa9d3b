package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseNomadBounds(t *testing.T) {
	t.Parallel()
	got, err := Parse("c.hcl", []byte("nomad {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n := got.Nomad; n.MaxImages != DefaultMaxDiscoveredImages || n.IncludeUndecided || n.HoldReadiness || n.AllowedPrefixes != nil {
		t.Errorf("defaults: got %+v", *n)
	}
	got, err = Parse("c.hcl", []byte(`nomad {
  max_images        = 7
  include_undecided = true
  hold_readiness    = true
  allowed_prefixes  = ["registry.service.consul:5000", "ghcr.io/acme/", "localhost:5000/x"]
}
`))
	if err != nil {
		t.Fatal(err)
	}
	n := got.Nomad
	if n.MaxImages != 7 || !n.IncludeUndecided || !n.HoldReadiness ||
		!reflect.DeepEqual(n.AllowedPrefixes, []string{"registry.service.consul:5000", "ghcr.io/acme/", "localhost:5000/x"}) {
		t.Errorf("set: got %+v", *n)
	}

	for src, want := range map[string]string{
		`max_images = 0`:                      "c.hcl:2:16: nomad: max_images must be between 1 and 10000, got 0",
		`max_images = 10001`:                  "max_images must be between 1 and 10000, got 10001",
		`max_images = "5"`:                    "max_images",
		`allowed_prefixes = []`:               "nomad: allowed_prefixes must not be empty",
		`allowed_prefixes = ["traefik"]`:      `allowed_prefixes: "traefik": want a registry host`,
		`allowed_prefixes = ["ghcr.io/*"]`:    `allowed_prefixes: "ghcr.io/*"`,
		`allowed_prefixes = ["ghcr.io/a:v1"]`: `allowed_prefixes: "ghcr.io/a:v1"`,
		`include_undecided = "yes"`:           "include_undecided",
	} {
		_, err := Parse("c.hcl", []byte("nomad {\n  "+src+"\n}\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", src, err, want)
		}
	}
}

func TestAllowedPrefix(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ref, prefix string
		want        bool
	}{
		{"registry.service.consul:5000/traefik:v3", "registry.service.consul:5000", true},
		{"registry.service.consul:5000/traefik:v3", "registry.service.consul:5000/", true},
		{"registry.service.consul:50001/traefik:v3", "registry.service.consul:5000", false},
		{"reg.example.evil.io/x:1", "reg.example", false},
		{"ghcr.io/acme/app:1", "ghcr.io/acme", true},
		{"ghcr.io/acmeevil/app:1", "ghcr.io/acme", false},
		{"ghcr.io/acme:1", "ghcr.io/acme", true},
		{"ghcr.io/acme@sha256:00", "ghcr.io/acme", true},
		{"docker.io/library/busybox:1", "ghcr.io/", false},
	} {
		if got := AllowedPrefix(tc.ref, tc.prefix); got != tc.want {
			t.Errorf("AllowedPrefix(%q, %q): got %v, want %v", tc.ref, tc.prefix, got, tc.want)
		}
	}
}

func TestParseNomadYield(t *testing.T) {
	t.Parallel()
	got, err := Parse("c.hcl", []byte("nomad {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if n := got.Nomad; n.Yield != YieldCancel || n.BackgroundPulls != DefaultBackgroundPulls {
		t.Errorf("defaults: yield %q, background_pulls %d", n.Yield, n.BackgroundPulls)
	}
	for _, v := range []string{YieldCancel, YieldPause, YieldOff} {
		got, err := Parse("c.hcl", []byte("nomad {\n  yield = \""+v+"\"\n  background_pulls = 3\n}\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got.Nomad.Yield != v || got.Nomad.BackgroundPulls != 3 {
			t.Errorf("%s: got yield %q, background_pulls %d", v, got.Nomad.Yield, got.Nomad.BackgroundPulls)
		}
	}
	for src, want := range map[string]string{
		`yield = "never"`:       `c.hcl:2:11: nomad: yield must be "cancel", "pause" or "off", got "never"`,
		`yield = true`:          "yield",
		`background_pulls = 0`:  "c.hcl:2:22: nomad: background_pulls must be between 1 and 64, got 0",
		`background_pulls = 65`: "background_pulls must be between 1 and 64, got 65",
	} {
		_, err := Parse("c.hcl", []byte("nomad {\n  "+src+"\n}\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", src, err, want)
		}
	}
}

func TestParseRelay(t *testing.T) {
	t.Parallel()
	got, err := Parse("c.hcl", []byte("nomad {\n  relay {}\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Relay{LockPath: DefaultRelayLockPath, Audience: DefaultRelayAudience, HistoryBytes: DefaultRelayHistoryBytes,
		MaxSubscribers: DefaultRelayMaxSubscribers, FallbackAfter: DefaultRelayFallbackAfter, LockTTL: DefaultRelayLockTTL,
		Pos: Pos{File: "c.hcl", Line: 2, Col: 3}}
	if r := got.Nomad.Relay; r == nil || !reflect.DeepEqual(*r, want) {
		t.Errorf("defaults: got %+v, want %+v", r, want)
	}
	// Without fallback_after, a longer lock_ttl lengthens it: four TTLs,
	// past the three a dead holder takes to be replaced.
	if got, err := Parse("c.hcl", []byte("nomad {\n  relay {\n    lock_ttl = \"30s\"\n  }\n}\n")); err != nil || got.Nomad.Relay.FallbackAfter != 2*time.Minute {
		t.Errorf("lock_ttl 30s: got %v, fallback_after %v; want 2m", err, got.Nomad.Relay)
	}
	if got, err := Parse("c.hcl", []byte("nomad {\n  relay {\n    lock_ttl = \"10s\"\n  }\n}\n")); err != nil || got.Nomad.Relay.FallbackAfter != DefaultRelayFallbackAfter {
		t.Errorf("lock_ttl 10s: got %v, fallback_after %v; want the default", err, got.Nomad.Relay)
	}
	if got, err := Parse("c.hcl", []byte("nomad {}\n")); err != nil || got.Nomad.Relay != nil {
		t.Errorf("without a relay block: %v, %+v", err, got.Nomad.Relay)
	}
	got, err = Parse("c.hcl", []byte(`nomad {
  relay {
    lock_path       = "nomad/jobs/pf/relay"
    namespace       = "infra"
    advertise       = "10.0.0.5:9105"
    identity_file   = "/secrets/relay.jwt"
    audience        = "aud"
    history_bytes   = 2097152
    max_subscribers = 10
    fallback_after  = "1m"
    lock_ttl        = "20s"
  }
}
`))
	if err != nil {
		t.Fatal(err)
	}
	r := got.Nomad.Relay
	if r.LockPath != "nomad/jobs/pf/relay" || r.Namespace != "infra" || r.Advertise != "10.0.0.5:9105" || r.IdentityFile != "/secrets/relay.jwt" ||
		r.Audience != "aud" || r.HistoryBytes != 2<<20 || r.MaxSubscribers != 10 || r.FallbackAfter.String() != "1m0s" || r.LockTTL.String() != "20s" {
		t.Errorf("set: got %+v", *r)
	}
	for src, want := range map[string]string{
		`lock_path = "nomad/other"`:                        `c.hcl:3:17: nomad relay: lock_path "nomad/other": want a Nomad variable path`,
		`lock_path = "a b"`:                                `lock_path "a b"`,
		`advertise = "10.0.0.5"`:                           `advertise "10.0.0.5": want host:port`,
		`advertise = ":9105"`:                              `advertise ":9105"`,
		`history_bytes = 10`:                               "nomad relay: history_bytes must be between 1048576 and 1073741824, got 10",
		`max_subscribers = 0`:                              "max_subscribers must be between 1 and 20000, got 0",
		`fallback_after = "100ms"`:                         `fallback_after must be between 1s and 10m, got "100ms"`,
		`lock_ttl = "25h"`:                                 "lock_ttl must be at most 24h",
		`audience = ""`:                                    "audience",
		`unknown = 1`:                                      "unknown",
		`fallback_after = 30`:                              "fallback_after",
		`max_subscribers = "5"`:                            "max_subscribers",
		`identity_file = ["/a", "/b"]`:                     "identity_file",
		`lock_path = "nomad/jobs/ok"` + "\n  }\n  relay {": "duplicate relay block",
	} {
		_, err := Parse("c.hcl", []byte("nomad {\n  relay {\n    "+src+"\n  }\n}\n"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error with %q", src, err, want)
		}
	}
}

func TestParsePeers(t *testing.T) {
	t.Parallel()
	got, err := Parse("c.hcl", []byte("nomad {\n  peers {}\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Peers{Order: PeersLast, Wait: DefaultPeersWait, MaxServing: DefaultPeersMaxServing, MaxSize: DefaultPeersMaxSize,
		Service: DefaultPeersService, Audience: DefaultRelayAudience, Pos: Pos{File: "c.hcl", Line: 2, Col: 3}}
	if p := got.Nomad.Peers; p == nil || !reflect.DeepEqual(*p, want) {
		t.Errorf("defaults: got %+v, want %+v", p, want)
	}
	got, err = Parse("c.hcl", []byte(`nomad {
  peers {
    order         = "first"
    wait          = "30s"
    max_serving   = 4
    max_size      = "2GiB"
    service       = "pf"
    identity_file = "/secrets/id.jwt"
    audience      = "aud"
  }
}
`))
	if err != nil {
		t.Fatal(err)
	}
	want = Peers{Order: PeersFirst, Wait: 30 * time.Second, MaxServing: 4, MaxSize: 2 << 30,
		Service: "pf", IdentityFile: "/secrets/id.jwt", Audience: "aud", Pos: Pos{File: "c.hcl", Line: 2, Col: 3}}
	if p := got.Nomad.Peers; p == nil || !reflect.DeepEqual(*p, want) {
		t.Errorf("set: got %+v, want %+v", p, want)
	}
	for src, wantErr := range map[string]string{
		`order = "sometimes"`: `c.hcl:3:`,
		`wait = "2h"`:         "wait must be at most 1h",
		`max_serving = 0`:     "max_serving must be between 1 and 64",
		`max_size = "lots"`:   "is not a size",
		`max_size = "1KiB"`:   "at least 1MiB",
		`service = ""`:        "service must not be empty",
		`unknown = 1`:         "Unsupported argument",
	} {
		_, err := Parse("c.hcl", []byte("nomad {\n  peers {\n    "+src+"\n  }\n}\n"))
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: got %v, want an error with %q", src, err, wantErr)
		}
	}
	if _, err := Parse("c.hcl", []byte("nomad {\n  peers {}\n  peers {}\n}\n")); err == nil || !strings.Contains(err.Error(), "duplicate peers block; the first is at line 2") {
		t.Errorf("two peers blocks: %v", err)
	}
}
