package agent

// Tests against the real test bed: a private dockerd and docker-registry
// instances on 127.0.0.1, with fault-injecting proxies in front of them.

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

var bed *testbed.Bed

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, &bed)) }

// proxied is a real registry behind a fault proxy; Addr is the proxy's.
type proxied struct {
	*faultproxy.Proxy
	direct string
}

func startRegistry(t *testing.T, name string) proxied {
	t.Helper()
	reg, p := bed.ProxiedRegistry(t, name)
	return proxied{Proxy: p, direct: reg.Addr}
}

// seed pushes an image made from seed to r as repo:tag (directly, not
// through the proxy) and returns its manifest digest and image ID.
func (r proxied) seed(t *testing.T, repoTag, seed string) (string, string) {
	t.Helper()
	dgst, id, err := bed.Seed(context.Background(), r.direct+"/"+repoTag, seed, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	return dgst, id
}

func (r proxied) ref(repoTag string) string { return r.Addr + "/" + repoTag }

func realFetcher(t *testing.T, stall time.Duration) (*Fetcher, *testbed.Buffer) {
	t.Helper()
	e, err := registry.NewEngine(registry.Options{Host: bed.Host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	logs := &testbed.Buffer{}
	return &Fetcher{Docker: e, PullTimeout: time.Minute, StallTimeout: stall, Log: slog.New(slog.NewJSONHandler(logs, nil))}, logs
}

func localID(t *testing.T, ref string) string {
	t.Helper()
	im, err := bed.Client.ImageInspect(context.Background(), ref)
	if err != nil {
		return ""
	}
	return im.ID
}

func wantOutcome(t *testing.T, got Result, want Outcome, source string) {
	t.Helper()
	if got.Outcome != want || got.Source != source {
		t.Fatalf("got %q from %q (err: %v), want %q from %q", got.Outcome, got.Source, got.Err, want, source)
	}
}

func TestRealBootstrap(t *testing.T) {
	cluster := startRegistry(t, "cluster")
	upstream := startRegistry(t, "upstream")
	_, id := upstream.seed(t, "traefik:v3", "traefik-v3")
	f, _ := realFetcher(t, time.Minute)

	img := config.Image{Name: "traefik", Expected: cluster.ref("traefik:v3"), Sources: []string{upstream.ref("traefik:v3")}}
	res := f.Fetch(context.Background(), img)
	wantOutcome(t, res, Retagged, upstream.ref("traefik:v3"))
	if got := localID(t, img.Expected); got != id || res.ImageID != id {
		t.Errorf("expected names %q (result says %q), want the source's image %q", got, res.ImageID, id)
	}
}

func TestRealExpectedUnavailable(t *testing.T) {
	cluster := startRegistry(t, "cluster-unavail")
	upstream := startRegistry(t, "upstream-unavail")
	cluster.seed(t, "app:1", "app-1-cluster")
	_, id := upstream.seed(t, "app:2", "app-2")
	upstream.seed(t, "other:1", "other-1")
	for _, tc := range []struct {
		name, expected, source, logged string
	}{
		{"connection refused", testbed.FreeAddr(t) + "/app:2", upstream.ref("app:2"), "connection refused"},
		{"unknown repository", cluster.ref("nothere:2"), upstream.ref("app:2"), "not found"},
		{"unknown tag", cluster.ref("app:2"), upstream.ref("app:2"), "not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, logs := realFetcher(t, time.Minute)
			res := f.Fetch(context.Background(), config.Image{Expected: tc.expected, Sources: []string{tc.source}})
			wantOutcome(t, res, Retagged, tc.source)
			if got := localID(t, tc.expected); got != id {
				t.Errorf("expected names %q, want %q", got, id)
			}
			if !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("logs lack %q:\n%s", tc.logged, logs)
			}
		})
	}

	t.Run("nothing available", func(t *testing.T) {
		f, _ := realFetcher(t, time.Minute)
		expected := cluster.ref("gone:1")
		res := f.Fetch(context.Background(), config.Image{Expected: expected, Sources: []string{upstream.ref("gone:1"), testbed.FreeAddr(t) + "/gone:1"}})
		if res.Outcome != Failed {
			t.Fatalf("got %q, want failed", res.Outcome)
		}
		for _, want := range []string{"expected: ", "source " + upstream.ref("gone:1") + ": ", "connection refused"} {
			if !strings.Contains(res.Err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, res.Err)
			}
		}
	})
}

func TestRealSourceOrder(t *testing.T) {
	cluster := startRegistry(t, "cluster-order")
	broken := startRegistry(t, "broken-order")
	upstream := startRegistry(t, "upstream-order")
	_, id := upstream.seed(t, "app:1", "order-app")
	broken.seed(t, "app:1", "order-app")
	broken.Set(faultproxy.Manifest500, -1)
	f, _ := realFetcher(t, time.Minute)

	img := config.Image{Expected: cluster.ref("app:1"), Sources: []string{broken.ref("app:1"), upstream.ref("app:1")}}
	res := f.Fetch(context.Background(), img)
	wantOutcome(t, res, Retagged, upstream.ref("app:1"))
	if res.ImageID != id {
		t.Errorf("got image %q, want %q", res.ImageID, id)
	}
	if broken.Count("GET manifest")+broken.Count("HEAD manifest") == 0 {
		t.Error("the first source was never asked")
	}

	// Once the cluster registry serves the image, no source is touched.
	cluster.seed(t, "app:1", "order-app-2")
	broken.ResetCounts()
	upstream.ResetCounts()
	res = f.Fetch(context.Background(), img)
	wantOutcome(t, res, Pulled, "")
	for _, p := range []proxied{broken, upstream} {
		for _, k := range []string{"GET manifest", "HEAD manifest", "GET blob"} {
			if n := p.Count(k); n != 0 {
				t.Errorf("a source saw %d %s requests, want none", n, k)
			}
		}
	}
}

func TestRealDigest(t *testing.T) {
	cluster := startRegistry(t, "cluster-digest")
	good := startRegistry(t, "good-digest")
	evil := startRegistry(t, "evil-digest")
	dgst, id := good.seed(t, "app:1", "the-real-content")
	evil.seed(t, "app:1", "other-content")
	f, _ := realFetcher(t, time.Minute)
	expected := cluster.ref("app:1")

	res := f.Fetch(context.Background(), config.Image{Expected: expected, Sources: []string{evil.ref("app:1")}, Digest: dgst})
	if res.Outcome != Failed {
		t.Fatalf("a source with other content: got %q, want failed", res.Outcome)
	}
	// Neither registry has a manifest with that digest: say so, not only
	// the registry's "manifest unknown".
	for _, repo := range []string{cluster.ref("app"), evil.ref("app")} {
		if want := "no manifest with digest " + dgst + " exists in " + repo; !strings.Contains(res.Err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, res.Err)
		}
	}
	if got := localID(t, expected); got != "" {
		t.Fatalf("other content was tagged as expected (%s)", got)
	}

	img := config.Image{Expected: expected, Sources: []string{evil.ref("app:1"), good.ref("app:1")}, Digest: dgst}
	res = f.Fetch(context.Background(), img)
	wantOutcome(t, res, Retagged, good.ref("app:1"))
	if got := localID(t, expected); got != id {
		t.Errorf("expected names %q, want %q", got, id)
	}

	// Converged: the digest is proved locally, nothing is asked of any registry.
	for _, p := range []proxied{cluster, good, evil} {
		p.ResetCounts()
	}
	res = f.Fetch(context.Background(), img)
	wantOutcome(t, res, UpToDate, "")
	for _, p := range []proxied{cluster, good, evil} {
		for _, k := range []string{"GET manifest", "HEAD manifest", "GET blob"} {
			if n := p.Count(k); n != 0 {
				t.Errorf("%d %s requests on a converged node, want none", n, k)
			}
		}
	}
}

func TestRealFaults(t *testing.T) {
	cluster := startRegistry(t, "cluster-faults")
	upstream := startRegistry(t, "upstream-faults")
	for _, tc := range []struct {
		name   string
		fault  faultproxy.Fault
		times  int
		want   Outcome
		logged string
	}{
		{"500", faultproxy.Manifest500, -1, Retagged, "500 Internal Server Error"},
		{"429 with Retry-After", faultproxy.Manifest429, -1, Retagged, "toomanyrequests"},
		{"lost blob, reported inside the stream", faultproxy.BlobUnknown, -1, Retagged, "unknown blob"},
		{"stalled body: the watchdog fires", faultproxy.BlobStall, -1, Retagged, "no progress for 1.5s"},
		// dockerd retries a layer download cut mid-way, resuming after 5 s.
		{"reset mid-blob, once", faultproxy.BlobReset, 1, Pulled, ""},
	} {
		if testbed.ContainerdStore() {
			// The containerd image store (Docker 29.7.2) quotes the HTTP
			// status, names a lost blob its own way, and does not resume
			// a layer download cut mid-way: the source serves then.
			switch tc.fault {
			case faultproxy.Manifest429:
				tc.logged = "429 Too Many Requests"
			case faultproxy.BlobUnknown:
				tc.logged = "could not fetch content descriptor"
			case faultproxy.BlobReset:
				tc.want = Retagged
			}
		}
		t.Run(tc.name, func(t *testing.T) {
			repo := strings.NewReplacer(" ", "-", ",", "", ":", "").Replace(strings.ToLower(tc.name)) + ":1"
			_, clusterID := cluster.seed(t, repo, "cluster-"+tc.name)
			_, upstreamID := upstream.seed(t, repo, "upstream-"+tc.name)
			cluster.Set(tc.fault, tc.times)
			cluster.ResetCounts()
			t.Cleanup(func() { cluster.Set(faultproxy.None, 0) })

			f, logs := realFetcher(t, 1500*time.Millisecond)
			img := config.Image{Expected: cluster.ref(repo), Sources: []string{upstream.ref(repo)}}
			res := f.Fetch(context.Background(), img)
			switch tc.want {
			case Retagged:
				wantOutcome(t, res, Retagged, upstream.ref(repo))
				if res.ImageID != upstreamID {
					t.Errorf("got image %q, want the source's %q", res.ImageID, upstreamID)
				}
			case Pulled:
				wantOutcome(t, res, Pulled, "")
				if res.ImageID != clusterID {
					t.Errorf("got image %q, want %q", res.ImageID, clusterID)
				}
				if n := cluster.Count("GET blob"); n < 3 {
					t.Errorf("got %d blob requests, want the cut one retried (config + layer + retry)", n)
				}
			}
			if !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("logs lack %q:\n%s", tc.logged, logs)
			}
		})
	}
}

// TestRealSecondRunPullsNothing: a node that already has every image fetches
// no layer, even when expected must still come through a source.
func TestRealSecondRunPullsNothing(t *testing.T) {
	cluster := startRegistry(t, "cluster-second")
	upstream := startRegistry(t, "upstream-second")
	cluster.seed(t, "a:1", "second-a")
	upstream.seed(t, "b:1", "second-b")
	f, _ := realFetcher(t, time.Minute)
	images := []config.Image{
		{Name: "a", Expected: cluster.ref("a:1")},
		{Name: "b", Expected: cluster.ref("b:1"), Sources: []string{upstream.ref("b:1")}},
	}
	for _, r := range f.Once(context.Background(), images, 2) {
		if !r.OK() {
			t.Fatalf("first run: %s %q: %v", r.Image.Name, r.Outcome, r.Err)
		}
	}
	cluster.ResetCounts()
	upstream.ResetCounts()
	res := f.Once(context.Background(), images, 2)
	wantOutcome(t, res[0], UpToDate, "")
	wantOutcome(t, res[1], UpToDate, upstream.ref("b:1"))
	if n := cluster.Count("GET blob") + upstream.Count("GET blob"); n != 0 {
		t.Errorf("second run fetched %d blobs, want none", n)
	}
}

// TestRealBundlePinUnproven: a bundle whose manifest claims the pinned
// digest for other content (and holds no blob of it) serves nothing, and
// the expected tag is not set; the same bundle serves the image when the
// config pins nothing. A real bundle Loader on the real dockerd.
func TestRealBundlePinUnproven(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	f, _ := realFetcher(t, time.Minute)
	e := f.Docker.(*registry.Engine)
	const exp = "127.0.0.1:1/agent-pin:1"
	id, err := bed.Import(ctx, "127.0.0.1:1/agent-pin-src:1", "agent-pin", 8<<10)
	if err != nil {
		t.Fatal(err)
	}
	pin := "sha256:" + strings.Repeat("5", 64) // the registry's, of other content
	path := filepath.Join(t.TempDir(), "b.tar")
	if _, err := bundle.Write(ctx, e, path, []bundle.Entry{{Expected: exp, ImageID: id, Digest: pin}}, bundle.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := bed.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Remove(context.Background(), id) })
	f.Bundles = bundle.NewLoader(e, f.Log)
	f.Offline = true

	res := f.Fetch(ctx, config.Image{Expected: exp, Digest: pin, Sources: []string{"bundle:" + path}})
	if res.Outcome != Failed || res.Err == nil || !strings.Contains(res.Err.Error(), "the pin is unproven") || !strings.Contains(res.Err.Error(), path) {
		t.Errorf("pinned: got %q (%v), want failed, the pin unproven", res.Outcome, res.Err)
	}
	if got := localID(t, exp); got != "" {
		t.Errorf("%s is tagged (%s) from a bundle that does not prove its pin", exp, got)
	}

	res = f.Fetch(ctx, config.Image{Expected: exp, Sources: []string{"bundle:" + path}})
	if res.Outcome != Retagged || localID(t, exp) != id {
		t.Errorf("unpinned: got %q (%v), %s on %q, want retagged on %s", res.Outcome, res.Err, exp, localID(t, exp), id)
	}
}
