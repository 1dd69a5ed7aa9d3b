package cluster

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	consul "github.com/hashicorp/consul/api"
	"github.com/hashicorp/nomad/api"
	"github.com/nomad-prefetch/nomad-prefetch/internal/catalogtest"
)

// catalogOf returns a Catalog reading fake c, with token.
func catalogOf(t *testing.T, c *catalogtest.Catalog, token string) Catalog {
	t.Helper()
	o := CatalogOptions{Provider: c.Provider, Service: c.Service}
	if c.Provider == catalogtest.Nomad {
		o.Nomad = nomadConfig(c.URL)
		o.Nomad.SecretID = token
	} else {
		o.Consul = &consul.Config{Address: strings.TrimPrefix(c.URL, "http://"), Token: token}
	}
	cat, err := NewCatalog(o)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// nomadConfig is a Nomad client configuration for addr, as
// api.DefaultConfig would read it from NOMAD_ADDR, NOMAD_REGION and
// NOMAD_NAMESPACE.
func nomadConfig(addr string) *api.Config {
	return &api.Config{Address: addr, Region: "global", Namespace: "default"}
}

func startCatalog(t *testing.T, provider, token string, addrs ...string) *catalogtest.Catalog {
	t.Helper()
	c := catalogtest.Start(provider, "prefetch", token)
	t.Cleanup(c.Close)
	c.SetAgents(addrs...)
	return c
}

// The recorded Nomad 2.0.5 answer, byte for byte, reads as one agent.
func TestNomadCatalogRecordedAnswer(t *testing.T) {
	t.Parallel()
	c := startCatalog(t, catalogtest.Nomad, "s3cr3t")
	c.AnswerRecorded()
	agents, err := catalogOf(t, c, "s3cr3t").Agents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Agent{Node: "e25839b9", NodeID: "e25839b9-0030-737a-5e7b-cc926aad887e", Address: "127.0.0.1:20100",
		AllocID: "58327118-a0f7-3174-6ac6-20028362ecf3", Datacenter: "dc1"}
	if len(agents) != 1 || agents[0] != want {
		t.Errorf("got %+v, want [%+v]", agents, want)
	}
}

// Consul's documented answer: the node's name, the node's address when the
// service has none, and its serfHealth check.
func TestConsulCatalog(t *testing.T) {
	t.Parallel()
	c := startCatalog(t, catalogtest.Consul, "s3cr3t")
	c.AnswerRecorded()
	agents, err := catalogOf(t, c, "s3cr3t").Agents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Agent{Node: "client-1", NodeID: "40e4a748-2192-161a-0510-9bf59fe950b5", Address: "10.1.10.12:20100", Datacenter: "dc1"}
	if len(agents) != 1 || agents[0] != want {
		t.Errorf("got %+v, want [%+v]", agents, want)
	}

	c2 := startCatalog(t, catalogtest.Consul, "", "127.0.0.1:1001", "127.0.0.1:1002")
	c2.SetDown("127.0.0.1:1002")
	agents, err = catalogOf(t, c2, "").Agents(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(agents) != 2 || agents[0].Address != "127.0.0.1:1001" || agents[0].Down != "" || !strings.Contains(agents[1].Down, "serfHealth critical") {
		t.Errorf("got %+v, want the second agent down by serfHealth", agents)
	}
}

func TestConsulTokenFile(t *testing.T) {
	t.Parallel()
	c := startCatalog(t, catalogtest.Consul, "from-file", "127.0.0.1:1001")
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cat, err := NewCatalog(CatalogOptions{Provider: ProviderConsul, Service: "prefetch", Consul: &consul.Config{Address: c.URL, TokenFile: file}})
	if err != nil {
		t.Fatal(err)
	}
	if agents, err := cat.Agents(context.Background()); err != nil || len(agents) != 1 {
		t.Errorf("got %v, %v; want one agent", agents, err)
	}
}

// Two allocations on one node (during an update) are two columns.
func TestNomadCatalogSameNodeTwice(t *testing.T) {
	t.Parallel()
	agents := sortAgents([]Agent{{Node: "b", Address: "h:2"}, {Node: "a", Address: "h:1"}, {Node: "b", Address: "h:3"}})
	var got []string
	for _, a := range agents {
		got = append(got, a.Node)
	}
	if strings.Join(got, " ") != "a b/h:2 b/h:3" {
		t.Errorf("got %q, want a b/h:2 b/h:3", got)
	}
}

func TestCatalogFailures(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{catalogtest.Nomad, catalogtest.Consul} {
		t.Run(provider+"/token refused", func(t *testing.T) {
			t.Parallel()
			c := startCatalog(t, provider, "right", "127.0.0.1:1001")
			_, err := catalogOf(t, c, "wrong").Agents(context.Background())
			env := map[string]string{catalogtest.Nomad: "NOMAD_TOKEN", catalogtest.Consul: "CONSUL_HTTP_TOKEN"}[provider]
			var he *HTTPError
			if !errors.As(err, &he) || he.Status != http.StatusForbidden || !strings.Contains(err.Error(), "the token in "+env+" is refused") || !Permanent(err) {
				t.Errorf("got %v, want a permanent 403 naming %s", err, env)
			}
			if strings.Contains(err.Error(), "wrong") {
				t.Errorf("the error shows the token: %v", err)
			}
			if n := c.Requests(); n != 1 {
				t.Errorf("a refused token was asked %d times, want once", n)
			}
		})
		t.Run(provider+"/down", func(t *testing.T) {
			t.Parallel()
			c := startCatalog(t, provider, "")
			cat := catalogOf(t, c, "")
			c.Close()
			_, err := cat.Agents(context.Background())
			if err == nil || Permanent(err) || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "tried 3 times") {
				t.Errorf("got %v, want connection refused, tried 3 times, not permanent", err)
			}
		})
		t.Run(provider+"/500 then answers", func(t *testing.T) {
			t.Parallel()
			c := startCatalog(t, provider, "", "127.0.0.1:1001")
			c.FailNext(2)
			agents, err := catalogOf(t, c, "").Agents(context.Background())
			if err != nil || len(agents) != 1 || c.Requests() != 3 {
				t.Errorf("got %v, %v after %d requests; want one agent after 3", agents, err, c.Requests())
			}
		})
		t.Run(provider+"/500 always", func(t *testing.T) {
			t.Parallel()
			c := startCatalog(t, provider, "")
			c.FailNext(1000)
			_, err := catalogOf(t, c, "").Agents(context.Background())
			if err == nil || !strings.Contains(err.Error(), "500 Internal Server Error: rpc error: No cluster leader") || c.Requests() != callAttempts {
				t.Errorf("got %v after %d requests; want the 500 after %d", err, c.Requests(), callAttempts)
			}
		})
		t.Run(provider+"/garbage", func(t *testing.T) {
			t.Parallel()
			c := startCatalog(t, provider, "")
			c.AnswerGarbage()
			_, err := catalogOf(t, c, "").Agents(context.Background())
			if err == nil || !strings.Contains(err.Error(), "invalid character '<'") {
				t.Errorf("got %v, want a decoding error", err)
			}
		})
	}
}

// A catalog that accepts the connection and never answers: each attempt
// ends at its deadline, and the call after its attempts.
func TestCatalogHangs(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	cat, err := NewCatalog(CatalogOptions{Provider: ProviderNomad, Service: "prefetch", Nomad: &api.Config{Address: srv.URL}, CallTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cat.Agents(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no answer within 100ms") || Permanent(err) || requests.Load() != callAttempts {
		t.Errorf("got %v after %d requests, want no answer within 100ms, %d times", err, requests.Load(), callAttempts)
	}
	// The caller's deadline ends it too.
	cat, _ = NewCatalog(CatalogOptions{Provider: ProviderNomad, Service: "prefetch", Nomad: &api.Config{Address: srv.URL}})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := cat.Agents(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the caller's deadline", err)
	}
}

func TestCatalogSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		o    CatalogOptions
		want string
	}{
		{"provider", CatalogOptions{Provider: "etcd", Service: "prefetch"}, `provider "etcd": want nomad or consul`},
		{"nomad scheme", CatalogOptions{Provider: ProviderNomad, Service: "prefetch", Nomad: &api.Config{Address: "ftp://x"}}, `scheme must be http, https or unix`},
		{"nomad address with password", CatalogOptions{Provider: ProviderNomad, Service: "prefetch", Nomad: &api.Config{Address: "http://u:pa ss@h:1"}}, "parsing Nomad address"},
		{"consul scheme", CatalogOptions{Provider: ProviderConsul, Service: "prefetch", Consul: &consul.Config{Address: "ftp://x"}}, `scheme "ftp"`},
		{"consul CA", CatalogOptions{Provider: ProviderConsul, Service: "prefetch", Consul: &consul.Config{Address: "127.0.0.1:8500", Scheme: "https",
			TLSConfig: consul.TLSConfig{CAFile: "/nonexistent/ca.pem"}}}, "configuring TLS for Consul"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewCatalog(tc.o)
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "pa ss") {
				t.Errorf("got %v, want a ConfigError with %q and no password", err, tc.want)
			}
		})
	}
}

// Only the job's own registrations are agents: another job registering the
// same service name is left out, and a registration whose address is not
// one is listed as invalid, not asked.
func TestCatalogTrustsOnlyTheJob(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{catalogtest.Nomad, catalogtest.Consul} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			c := startCatalog(t, provider, "", "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:0", "0.0.0.0:1003", "127.0.0.1:1004")
			c.SetJob("127.0.0.1:1002", "impostor")
			c.SetJob("127.0.0.1:1004", "")
			agents, err := catalogOf(t, c, "").Agents(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var addrs []string
			for _, a := range agents {
				addrs = append(addrs, a.Address+"|"+a.Invalid)
			}
			want := []string{"0.0.0.0:1003|the registration's address 0.0.0.0 is the unspecified address, not a node's", "127.0.0.1:0|the registration's port 0 is not a port", "127.0.0.1:1001|"}
			slices.Sort(addrs)
			if !slices.Equal(addrs, want) {
				t.Errorf("got %q, want %q (the impostor and the job-less registration left out)", addrs, want)
			}
		})
	}
}

// A catalog that redirects to another host is not followed: the token
// never reaches that host.
func TestCatalogRedirectKeepsToken(t *testing.T) {
	t.Parallel()
	for _, provider := range []string{catalogtest.Nomad, catalogtest.Consul} {
		t.Run(provider, func(t *testing.T) {
			t.Parallel()
			var leaked atomic.Int64
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("X-Nomad-Token") != "" || r.Header.Get("X-Consul-Token") != "" {
					leaked.Add(1)
				}
				w.Write([]byte("[]"))
			}))
			t.Cleanup(other.Close)
			// 127.0.0.2 is another host to net/http, still loopback.
			target := strings.Replace(other.URL, "127.0.0.1", "127.0.0.2", 1)
			redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target+r.URL.RequestURI(), http.StatusTemporaryRedirect)
			}))
			t.Cleanup(redirector.Close)
			o := CatalogOptions{Provider: provider, Service: "prefetch"}
			if provider == catalogtest.Nomad {
				o.Nomad = &api.Config{Address: redirector.URL, SecretID: "s3cr3t"}
			} else {
				o.Consul = &consul.Config{Address: strings.TrimPrefix(redirector.URL, "http://"), Token: "s3cr3t"}
			}
			cat, err := NewCatalog(o)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cat.Agents(context.Background())
			if err == nil || !strings.Contains(err.Error(), "redirected to 127.0.0.2") || !Permanent(err) {
				t.Errorf("got %v, want a permanent refusal of the redirect", err)
			}
			if n := leaked.Load(); n != 0 {
				t.Errorf("the other host got the token %d times", n)
			}
		})
	}
}
