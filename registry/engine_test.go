package registry

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mobyregistry "github.com/moby/moby/api/types/registry"
	"github.com/nomad-prefetch/nomad-prefetch/internal/faultproxy"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

var bed *testbed.Bed

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, &bed)) }

// setup starts a registry (and a fault proxy in front of it) holding one
// image, and returns the proxy and the reference through it.
func setup(t *testing.T, name string) (*faultproxy.Proxy, string, string) {
	t.Helper()
	reg, p := bed.ProxiedRegistry(t, name)
	dgst, _, err := bed.Seed(context.Background(), reg.Addr+"/"+name+":1", name, 256<<10)
	if err != nil {
		t.Fatal(err)
	}
	return p, p.Addr + "/" + name + ":1", dgst
}

func newEngine(t *testing.T, creds *Credentials) *Engine {
	t.Helper()
	e, err := NewEngine(Options{Host: bed.Host, Credentials: creds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestPullInspectTag(t *testing.T) {
	_, ref, dgst := setup(t, "plain")
	ctx := context.Background()
	e := newEngine(t, nil)
	if err := e.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Inspect(ctx, ref); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Inspect before pull: got %v, want ErrNotFound", err)
	}
	if err := e.Pull(ctx, ref, PullOptions{Platform: "linux/amd64", StallTimeout: time.Minute}); err != nil {
		t.Fatalf("Pull: %v", err)
	}
	im, err := e.Inspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !im.HasDigest(dgst) {
		t.Errorf("got RepoDigests %v, want one with %s", im.RepoDigests, dgst)
	}
	if im.HasDigest("sha256:" + strings.Repeat("0", 64)) {
		t.Errorf("HasDigest of another digest: got true")
	}
	target := "127.0.0.1:1/retagged/plain:v1"
	if err := e.Tag(ctx, im.ID, target); err != nil {
		t.Fatal(err)
	}
	tagged, err := e.Inspect(ctx, target)
	if err != nil || tagged.ID != im.ID {
		t.Errorf("after Tag: got %v, %v; want image %s", tagged.ID, err, im.ID)
	}
	byDigest, err := WithDigest(ref, dgst)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Pull(ctx, byDigest, PullOptions{StallTimeout: time.Minute}); err != nil {
		t.Errorf("Pull by digest: %v", err)
	}
}

// TestPullInStreamError proves that the daemon answers 200 to a pull that
// then fails, and that Pull reports it as a failure.
func TestPullInStreamError(t *testing.T) {
	p, ref, _ := setup(t, "instream")
	ctx := context.Background()
	p.Set(faultproxy.BlobUnknown, -1)

	// The raw API: status 200, then an errorDetail in the stream.
	sock := strings.TrimPrefix(bed.Host, "unix://")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	name, tag, _ := strings.Cut(ref[strings.Index(ref, "/")+1:], ":")
	url := fmt.Sprintf("http://docker/v1.41/images/create?fromImage=%s&tag=%s", p.Addr+"/"+name, tag)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	req.Header.Set("X-Registry-Auth", base64.URLEncoding.EncodeToString([]byte("{}")))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sawError := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var m struct{ ErrorDetail *struct{ Message string } }
		if json.Unmarshal(sc.Bytes(), &m) == nil && m.ErrorDetail != nil {
			sawError = true
		}
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !sawError {
		t.Fatalf("raw pull: got status %d, errorDetail %v; want 200 with an errorDetail (the premise of this test)", resp.StatusCode, sawError)
	}

	e := newEngine(t, nil)
	err = e.Pull(ctx, ref, PullOptions{StallTimeout: time.Minute})
	// The classic store quotes the registry's BLOB_UNKNOWN; the containerd
	// store (Docker 29) says only that the blob was not found.
	want := "unknown blob"
	if testbed.ContainerdStore() {
		want = "could not fetch content descriptor"
	}
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Pull: got %v, want the in-stream error (%s)", err, want)
	}
	if _, err := e.Inspect(ctx, ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("after a failed pull: got %v, want ErrNotFound", err)
	}
}

func TestPullStallWatchdog(t *testing.T) {
	p, ref, _ := setup(t, "stall")
	p.Set(faultproxy.BlobStall, -1)
	e := newEngine(t, nil)
	err := e.Pull(context.Background(), ref, PullOptions{StallTimeout: 1500 * time.Millisecond})
	var stalled *StalledError
	if !errors.As(err, &stalled) || !strings.Contains(err.Error(), "no progress for 1.5s") {
		t.Fatalf("got %v, want the watchdog to cancel the pull", err)
	}
}

func TestPullDeadlineCause(t *testing.T) {
	p, ref, _ := setup(t, "deadline")
	p.Set(faultproxy.BlobStall, -1)
	e := newEngine(t, nil)
	cause := errors.New("pull timed out after 1s")
	ctx, cancel := context.WithTimeoutCause(context.Background(), time.Second, cause)
	defer cancel()
	if err := e.Pull(ctx, ref, PullOptions{StallTimeout: time.Minute}); !errors.Is(err, cause) {
		t.Fatalf("got %v, want the deadline's cause", err)
	}
}

func TestPullWithCredentials(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	const user, password = "bot", "pa55-w0rd-that-must-not-leak"
	reg, err := bed.StartRegistry("auth", testbed.RegistryOptions{Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	ref := reg.Addr + "/private:1"
	id, err := bed.Import(ctx, ref, "private", 4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bed.Push(ctx, ref, mobyregistry.AuthConfig{Username: user, Password: password, ServerAddress: reg.Addr}); err != nil {
		t.Fatal(err)
	}
	if err := bed.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}

	// Anonymous: refused.
	dir := t.TempDir()
	err = newEngine(t, NewCredentials(nil, dir)).Pull(ctx, ref, PullOptions{StallTimeout: time.Minute})
	if err == nil {
		t.Fatal("anonymous pull: got success, want unauthorized")
	}

	// From a Docker config.json auths entry, as `docker login` writes it.
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	cfgJSON := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Addr, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfgJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := newEngine(t, NewCredentials(nil, dir)).Pull(ctx, ref, PullOptions{StallTimeout: time.Minute}); err != nil {
		t.Fatalf("pull with config.json credentials: %v", err)
	}
	if strings.Contains(fmt.Sprint(err), password) {
		t.Errorf("an error carries the password")
	}
}

func TestCredentialsOrder(t *testing.T) {
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgJSON := `{"auths":{
		"a.example":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("ua:from-docker-config")) + `"},
		"https://index.docker.io/v1/":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("hub:hubpw")) + `"}
	}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfgJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile := func() (string, error) {
		b, err := os.ReadFile(pwFile)
		return strings.TrimSpace(string(b)), err
	}
	creds := NewCredentials([]Auth{{Host: "a.example", Username: "cfg", Password: fromFile}}, dir)
	for _, tc := range []struct {
		host, user, pw string
	}{
		{"a.example", "cfg", "from-file"}, // the config's auth block wins
		{"docker.io", "hub", "hubpw"},     // Docker Hub's key in config.json
		{"b.example", "", ""},             // nothing: anonymous
	} {
		got, err := creds.Lookup(tc.host)
		if err != nil {
			t.Fatalf("%s: %v", tc.host, err)
		}
		if got.Username != tc.user || got.Password != tc.pw {
			t.Errorf("%s: got %q/%q, want %q/%q", tc.host, got.Username, got.Password, tc.user, tc.pw)
		}
	}
	hdr, err := creds.header("b.example/x:1")
	if err != nil || hdr != "" {
		t.Errorf("anonymous header: got %q, %v; want empty", hdr, err)
	}

	// A broken credential helper is an error that names the host, not a silent
	// anonymous pull.
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"credHelpers":{"c.example":"prefetch-test-missing"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := creds.Lookup("c.example"); err == nil || !strings.Contains(err.Error(), "c.example") {
		t.Errorf("missing helper: got %v, want an error naming c.example", err)
	}
}

func TestWithDigest(t *testing.T) {
	const d = "sha256:4f7e1e1e4b36b7f5f9d5b6f4b0a9c8e4b2a1d0c9f8e7d6c5b4a39281706f5e4d"
	for _, tc := range []struct{ in, want string }{
		{"reg:5000/a/b:v1", "reg:5000/a/b@" + d},
		{"traefik:v3", "docker.io/library/traefik@" + d},
		{"reg:5000/a@" + d, "reg:5000/a@" + d},
	} {
		got, err := WithDigest(tc.in, d)
		if err != nil || got != tc.want {
			t.Errorf("WithDigest(%q): got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := WithDigest("a:1", "sha256:12"); err == nil {
		t.Error("WithDigest with a bad digest: got no error")
	}
}

func TestRemoteDigest(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	reg, p := bed.ProxiedRegistry(t, "remote")
	digests := map[string]string{}
	for _, repo := range []string{"r1", "r2", "r3"} {
		d, _, err := bed.Seed(ctx, reg.Addr+"/"+repo+":1", "remote-"+repo, 1024)
		if err != nil {
			t.Fatal(err)
		}
		digests[repo] = d
	}

	r := &Remote{Credentials: NewCredentials(nil, t.TempDir())}
	for range 2 {
		for repo, want := range digests {
			got, err := r.Digest(ctx, p.Addr+"/"+repo+":1")
			if err != nil || got != want {
				t.Errorf("%s: got %q, %v; want %s", repo, got, err, want)
			}
		}
	}
	// One /v2/ ping for the registry, then one HEAD per lookup.
	if pings, heads := p.Count("GET other"), p.Count("HEAD manifest"); pings != 1 || heads != 6 {
		t.Errorf("got %d pings and %d HEADs for 6 lookups, want 1 and 6", pings, heads)
	}

	if _, err := r.Digest(ctx, p.Addr+"/r1:nope"); !errors.Is(err, ErrRemoteNotFound) {
		t.Errorf("unknown tag: got %v, want ErrRemoteNotFound", err)
	}
	p.Set(faultproxy.Manifest429, -1)
	_, err := r.Digest(ctx, p.Addr+"/r1:1")
	var rl *RateLimitedError
	if !errors.As(err, &rl) || rl.RetryAfter != 7*time.Second {
		t.Errorf("429: got %v, want a RateLimitedError with Retry-After 7s", err)
	}
	if _, err := r.Digest(ctx, testbed.FreeAddr(t)+"/x:1"); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("registry down: got %v, want connection refused", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"-1", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q): got %s, want %s", tc.v, got, tc.want)
		}
	}
}

// TestRemoteConcurrentLookups: lookups racing for one registry share one
// /v2/ ping.
func TestRemoteConcurrentLookups(t *testing.T) {
	p, ref, want := setup(t, "concurrent")
	r := &Remote{Credentials: NewCredentials(nil, t.TempDir())}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got, err := r.Digest(context.Background(), ref); err != nil || got != want {
				t.Errorf("got %q, %v; want %s", got, err, want)
			}
		})
	}
	wg.Wait()
	if pings := p.Count("GET other"); pings != 1 {
		t.Errorf("8 concurrent lookups sent %d pings, want 1", pings)
	}
}

func TestInsecureRegistries(t *testing.T) {
	testbed.Need(t, bed)
	e := newEngine(t, nil)
	// The test bed's dockerd runs with no daemon.json settings: its only
	// insecure registries are the default CIDR, 127.0.0.0/8.
	for host, want := range map[string]bool{
		"127.0.0.1:5000":        true,
		"127.1.2.3":             true,
		"docker.io":             false,
		"registry.example:5000": false,
		"10.0.0.1:5000":         false,
	} {
		if got := e.Insecure(host); got != want {
			t.Errorf("Insecure(%q): got %v, want %v", host, got, want)
		}
	}
}

// TestRemoteInsecureByName: a registry the daemon lists as insecure by name
// is asked over plain HTTP, as dockerd would; without that knowledge the
// agent tries HTTPS, fails, and (in the Fetcher) falls back to a pull.
func TestRemoteInsecureByName(t *testing.T) {
	_, ref, want := setup(t, "insecure")
	addr := ref[:strings.Index(ref, "/")]
	const host = "registry.test:5000"
	named := host + ref[strings.Index(ref, "/"):]
	dial := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr) // registry.test is this registry
	}}
	r := &Remote{Credentials: NewCredentials(nil, t.TempDir()), Transport: dial, Insecure: func(h string) bool { return h == host }}
	if got, err := r.Digest(context.Background(), named); err != nil || got != want {
		t.Errorf("insecure by name: got %q, %v; want %s", got, err, want)
	}
	r = &Remote{Credentials: NewCredentials(nil, t.TempDir()), Transport: dial}
	if _, err := r.Digest(context.Background(), named); err == nil {
		t.Error("not known as insecure: got a digest over HTTPS from a plain-HTTP registry")
	}
}

// The test bed's dockerd (Debian's 20.10, vfs) keeps images in the classic
// store: no image is named by repo@digest unless pulled so. Run against
// the containerd image store (PREFETCH_TESTBED_DAEMON_JSON), it must say so.
func TestContainerdStoreClassic(t *testing.T) {
	testbed.Need(t, bed)
	want := testbed.ContainerdStore()
	if got := newEngine(t, nil).ContainerdStore(context.Background()); got != want {
		t.Errorf("ContainerdStore: got %v, want %v (the bed's daemon.json: %q)", got, want, os.Getenv("PREFETCH_TESTBED_DAEMON_JSON"))
	}
}
