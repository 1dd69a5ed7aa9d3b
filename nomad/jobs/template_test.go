package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/nomad-prefetch/nomad-prefetch/config"
)

// consulTemplate is the real consul-template binary (see
// testbed.ConsulTemplate).
func consulTemplate(t *testing.T) string { return testbed.ConsulTemplate(t) }

// render runs consul-template -once on prefetch.ctmpl with env and the
// extra flags and returns what it wrote.
func render(t *testing.T, bin string, env []string, flags ...string) []byte {
	t.Helper()
	tmpl, err := filepath.Abs("prefetch.ctmpl")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "config.hcl")
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	args := append([]string{"-once", "-log-level", "warn", "-template", tmpl + ":" + out}, flags...)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("consul-template: %v\n%s", err, stderr.String())
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// hostile holds everything that could break out of an HCL string.
const hostile = "q\"uote\\back\\\\slash ${x} $${y} %{ if z } %%{w} new\nline \t<&>\u2028 $"

// wantImage is how an image should come out of config.Parse.
type wantImage struct {
	name, expected string
	sources        []string
	digest         string
	platform       string
}

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// sample is the data both sources are given, as image name → JSON value,
// and what the loader must make of it. The hostile string is a name (any
// string is a valid label), so it must come through unchanged.
var sample = []struct {
	name, value string
	want        wantImage
}{
	{"traefik", `{"expected": "registry.service.consul:5000/traefik:v3.1.2", "sources": ["docker.io/library/traefik:v3.1.2", "ghcr.io/mirror/traefik:v3.1.2"]}`,
		wantImage{"traefik", "registry.service.consul:5000/traefik:v3.1.2", []string{"docker.io/library/traefik:v3.1.2", "ghcr.io/mirror/traefik:v3.1.2"}, "", ""}},
	{"minio", `{"expected": "registry.service.consul:5000/minio/minio:RELEASE.2024-06-13T22-53-53Z", "digest": "` + digest + `", "platform": "linux/arm64"}`,
		wantImage{"minio", "registry.service.consul:5000/minio/minio:RELEASE.2024-06-13T22-53-53Z", nil, digest, "linux/arm64"}},
	{hostile, `{"expected": "pause:3.10"}`,
		wantImage{hostile, "docker.io/library/pause:3.10", nil, "", ""}},
}

// checkConfig parses a rendered config with the project's own loader and
// compares it with the sample.
func checkConfig(t *testing.T, rendered []byte) {
	t.Helper()
	cfg, err := config.Parse("config.hcl", rendered)
	if err != nil {
		t.Fatalf("the rendered config does not load: %v\n%s", err, rendered)
	}
	got := map[string]wantImage{}
	for _, im := range cfg.Images {
		got[im.Name] = wantImage{im.Name, im.Expected, im.Sources, im.Digest, im.Platform}
	}
	if len(got) != len(sample) {
		t.Errorf("got %d images, want %d:\n%s", len(got), len(sample), rendered)
	}
	for _, s := range sample {
		g, ok := got[s.name]
		if !ok {
			t.Errorf("image %q missing from\n%s", s.name, rendered)
			continue
		}
		if g.expected != s.want.expected || !slices.Equal(g.sources, s.want.sources) || g.digest != s.want.digest || g.platform != s.want.platform {
			t.Errorf("image %q loaded as %+v, want %+v", s.name, g, s.want)
		}
	}
}

// TestConsulKV renders prefetch.ctmpl with the real consul-template against
// a fake of Consul's KV endpoints and loads the result with config.Parse.
func TestConsulKV(t *testing.T) {
	t.Parallel()
	bin := consulTemplate(t)
	s := newStore()
	for _, im := range sample {
		s.put("prefetch/images/"+im.name, im.value)
	}
	// Neither a folder below the prefix nor a sibling prefix is an image.
	s.put("prefetch/images/old/traefik", `{"expected": "old:1"}`)
	s.put("prefetch/images-old/traefik", `{"expected": "old:1"}`)
	srv := consulKV(t, s)
	addr := strings.TrimPrefix(srv.URL, "http://")

	rendered := render(t, bin, nil, "-consul-addr", addr)
	checkConfig(t, rendered)
	if u := s.Unknown(); len(u) > 0 {
		t.Errorf("consul-template asked the fake for %q", u)
	}

	t.Run("prefix from the environment", func(t *testing.T) {
		s.put("other/prefix/registry", `{"expected": "registry:2.8.3"}`)
		rendered := render(t, bin, []string{"PREFETCH_KV_PREFIX=other/prefix/"}, "-consul-addr", addr)
		cfg, err := config.Parse("config.hcl", rendered)
		if err != nil || len(cfg.Images) != 1 || cfg.Images[0].Name != "registry" {
			t.Errorf("with PREFETCH_KV_PREFIX=other/prefix/, loaded %+v, %v from\n%s", cfg.Images, err, rendered)
		}
	})
}

// TestBadValues proves that a value that is not what the template expects
// never breaks the HCL itself: it is reported by the loader, with its line.
func TestBadValues(t *testing.T) {
	t.Parallel()
	bin := consulTemplate(t)
	for _, tc := range []struct {
		desc, value string
		want        string // in the loader's only problem
	}{
		{"hostile expected", `{"expected": ` + jsonString(hostile) + `}`, strconv.Quote(hostile) + ` is not a valid image reference`},
		{"not JSON", `registry:2 ${oops}"`, `An argument named "invalid_value"`},
		{"not an object", `["registry:2"]`, `An argument named "invalid_value"`},
		{"a key that is no attribute name", `{"expected": "registry:2", "Sources\n}": []}`, `An argument named "invalid_key"`},
		{"a misspelt key", `{"expected": "registry:2", "source": ["x:1"]}`, `An argument named "source"`},
		{"a number", `{"expected": 2}`, `expected must be a string`},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			t.Parallel()
			s := newStore()
			s.put("prefetch/images/bad", tc.value)
			srv := consulKV(t, s)
			rendered := render(t, bin, nil, "-consul-addr", strings.TrimPrefix(srv.URL, "http://"))
			if _, ds := hclsyntax.ParseConfig(rendered, "config.hcl", hcl.InitialPos); ds.HasErrors() {
				t.Fatalf("the rendered config is not even HCL: %v\n%s", ds, rendered)
			}
			_, err := config.Parse("config.hcl", rendered)
			var problems config.Errors
			if !errors.As(err, &problems) {
				t.Fatalf("loading gave %v; want problems, from\n%s", err, rendered)
			}
			found := false
			for _, p := range problems {
				found = found || strings.Contains(p.String(), tc.want)
			}
			if !found {
				t.Errorf("the problems are %q; want one to contain %q (rendered:\n%s)", problems, tc.want, rendered)
			}
		})
	}
}

// TestConsulKVBlocking runs consul-template as a daemon, as it runs in
// production: a key written after the first render is rendered through a
// blocking query.
func TestConsulKVBlocking(t *testing.T) {
	t.Parallel()
	bin := consulTemplate(t)
	s := newStore()
	s.put("prefetch/images/traefik", sample[0].value)
	srv := consulKV(t, s)
	tmpl, err := filepath.Abs("prefetch.ctmpl")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "config.hcl")
	ctx, cancel := context.WithCancel(t.Context())
	cmd := exec.CommandContext(ctx, bin, "-log-level", "warn", "-consul-addr", strings.TrimPrefix(srv.URL, "http://"),
		"-template", tmpl+":"+out)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cancel(); <-done })

	images := func() []string {
		data, err := os.ReadFile(out)
		if err != nil {
			return nil
		}
		cfg, err := config.Parse(out, data)
		if err != nil {
			t.Fatalf("the rendered config does not load: %v\n%s", err, data)
		}
		var names []string
		for _, im := range cfg.Images {
			names = append(names, im.Name)
		}
		return names
	}
	waitFor := func(want []string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !slices.Equal(images(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("the config holds %q, want %q; consul-template said:\n%s", images(), want, stderr.String())
			}
			select {
			case err := <-done:
				t.Fatalf("consul-template exited: %v\n%s", err, stderr.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor([]string{"traefik"})
	s.put("prefetch/images/registry", `{"expected": "registry:2.8.3"}`)
	waitFor([]string{"registry", "traefik"})
}

// TestNomadVariables renders the same template from a Nomad variable
// (PREFETCH_CONFIG_SOURCE=nomad) against a fake of Nomad's /v1/var/
// endpoint.
func TestNomadVariables(t *testing.T) {
	t.Parallel()
	bin := consulTemplate(t)
	s := newStore()
	for _, im := range sample {
		s.put(nomadItem("nomad/jobs/prefetch", im.name), im.value)
	}
	srv := nomadVars(t, s)
	cfgFile := filepath.Join(t.TempDir(), "ct.hcl")
	if err := os.WriteFile(cfgFile, []byte("nomad {\n  address = \""+srv.URL+"\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rendered := render(t, bin, []string{"PREFETCH_CONFIG_SOURCE=nomad"}, "-config", cfgFile)
	checkConfig(t, rendered)
	if u := s.Unknown(); len(u) > 0 {
		t.Errorf("consul-template asked the fake for %q", u)
	}
}

// TestUnknownSource renders a config the loader refuses, naming the setting.
func TestUnknownSource(t *testing.T) {
	t.Parallel()
	bin := consulTemplate(t)
	rendered := render(t, bin, []string{"PREFETCH_CONFIG_SOURCE=vault"})
	_, err := config.Parse("config.hcl", rendered)
	if err == nil || !strings.Contains(err.Error(), `"config_source"`) {
		t.Errorf("PREFETCH_CONFIG_SOURCE=vault rendered a config that loads with %v:\n%s", err, rendered)
	}
}

// jsonString is s as a JSON string.
func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestDiscoveryBlock renders the nomad block the prefetch job asks for with
// PREFETCH_DISCOVERY, hostile values included, and loads it.
func TestDiscoveryBlock(t *testing.T) {
	t.Parallel()
	hostileRewrites, err := json.Marshal([]map[string]any{{"from": "x/", "sources": []string{hostile}}})
	if err != nil {
		t.Fatal(err)
	}
	bin := consulTemplate(t)
	s := newStore()
	s.put(nomadItem("nomad/jobs/prefetch", "registry"), `{"expected": "registry.service.consul:5000/registry:2.8.3", "sources": ["docker.io/library/registry:2.8.3"]}`)
	srv := nomadVars(t, s)
	cfgFile := filepath.Join(t.TempDir(), "ct.hcl")
	if err := os.WriteFile(cfgFile, []byte("nomad {\n  address = \""+srv.URL+"\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The discovery settings the job's template passes, but for the rewrites.
	discovery := []string{
		"PREFETCH_CONFIG_SOURCE=nomad",
		"PREFETCH_DISCOVERY=true",
		"PREFETCH_NOMAD_ADDR=unix:///secrets/api.sock",
		"PREFETCH_NOMAD_TOKEN_FILE=/secrets/nomad_token",
		"PREFETCH_NODE_ID=e25839b9-0030-737a-5e7b-cc926aad887e",
		`PREFETCH_NOMAD_NAMESPACES=["default","team-*"]`,
		`PREFETCH_NOMAD_EXCLUDE=["*:latest"]`,
		"PREFETCH_NOMAD_INFRA_IMAGE=none",
	}
	rendered := render(t, bin, append(slices.Clone(discovery), "PREFETCH_NOMAD_REWRITES="+string(hostileRewrites)), "-config", cfgFile)
	cfg, err := config.Parse("config.hcl", rendered)
	if err == nil {
		t.Fatalf("a hostile rewrite source was accepted:\n%s", rendered)
	}
	if !strings.Contains(err.Error(), "nomad rewrite: source prefix") {
		t.Fatalf("got %v, want the hostile source refused by name\n%s", err, rendered)
	}
	rendered = render(t, bin, append(slices.Clone(discovery),
		`PREFETCH_NOMAD_REWRITES=[{"from":"registry.service.consul:5000/","sources":["docker.io/library/","ghcr.io/acme/"]}]`,
		"PREFETCH_NOMAD_MAX_IMAGES=250",
		"PREFETCH_NOMAD_INCLUDE_UNDECIDED=true",
		"PREFETCH_NOMAD_HOLD_READINESS=false",
		`PREFETCH_NOMAD_ALLOWED_PREFIXES=["registry.service.consul:5000","docker.io/library/"]`,
		"PREFETCH_NOMAD_YIELD=pause",
		"PREFETCH_NOMAD_BACKGROUND_PULLS=2",
		"PREFETCH_NOMAD_RELAY=true",
		"PREFETCH_NOMAD_PEERS=first",
	), "-config", cfgFile)
	cfg, err = config.Parse("config.hcl", rendered)
	if err != nil {
		t.Fatalf("%v\n%s", err, rendered)
	}
	n := cfg.Nomad
	if n == nil || n.MaxImages != 250 || !n.IncludeUndecided || n.HoldReadiness ||
		!slices.Equal(n.AllowedPrefixes, []string{"registry.service.consul:5000", "docker.io/library/"}) {
		t.Fatalf("discovery bounds: got nomad block %+v from\n%s", n, rendered)
	}
	if n.Relay == nil || n.Relay.LockPath != config.DefaultRelayLockPath {
		t.Fatalf("PREFETCH_NOMAD_RELAY=true: got relay %+v from\n%s", n.Relay, rendered)
	}
	if n.Peers == nil || n.Peers.Order != config.PeersFirst || n.Peers.MaxServing != config.DefaultPeersMaxServing {
		t.Fatalf("PREFETCH_NOMAD_PEERS=first: got peers %+v from\n%s", n.Peers, rendered)
	}
	if n.Yield != config.YieldPause || n.BackgroundPulls != 2 {
		t.Fatalf("foreground first: got yield %q, background_pulls %d from\n%s", n.Yield, n.BackgroundPulls, rendered)
	}
	if n == nil || n.Address != "unix:///secrets/api.sock" || n.TokenFile != "/secrets/nomad_token" || n.NodeID == "" ||
		!slices.Equal(n.Namespaces, []string{"default", "team-*"}) || !slices.Equal(n.Exclude, []string{"*:latest"}) ||
		n.InfraImage == nil || *n.InfraImage != "" || len(n.Rewrites) != 1 || !slices.Equal(n.Rewrites[0].Sources, []string{"docker.io/library/", "ghcr.io/acme/"}) {
		t.Errorf("got nomad block %+v from\n%s", n, rendered)
	}
	if len(cfg.Images) != 1 {
		t.Errorf("got %d images, want the variable's one", len(cfg.Images))
	}

	// Without PREFETCH_DISCOVERY, no nomad block.
	rendered = render(t, bin, []string{"PREFETCH_CONFIG_SOURCE=nomad"}, "-config", cfgFile)
	if cfg, err := config.Parse("config.hcl", rendered); err != nil || cfg.Nomad != nil {
		t.Errorf("without discovery: got %v, %+v", err, cfg.Nomad)
	}
}
