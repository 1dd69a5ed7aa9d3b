// Package testbed starts the real servers prefetch's tests run against: a
// private Docker daemon (Debian's docker.io, vfs storage, its own socket,
// data-root and exec-root under a short temp directory) and real
// distribution registries (Debian's docker-registry) on 127.0.0.1. It never
// touches a system-wide daemon, socket or registry.
//
// A test package uses it from TestMain through Run. When the servers can't
// be had (not root, packages missing), tests that need them are skipped,
// except under CI=true, where the whole package fails instead: a green CI
// must mean the real servers were exercised. With go test -short they are
// not started, CI or not: the fast loop of docs/testing.md.
//
// The daemon is the first dockerd on PATH, with an empty daemon.json and
// the vfs storage driver. To run the same tests against another Engine and
// image store, put its dockerd first on PATH and set
// PREFETCH_TESTBED_DAEMON_JSON to the daemon.json to use (for Docker 25+'s
// containerd image store: {"features":{"containerd-snapshotter":true}}) and
// PREFETCH_TESTBED_STORAGE_DRIVER to its storage driver (default vfs).
package testbed

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/bcrypt"
)

// Bed is a running private dockerd plus the registries started on it.
type Bed struct {
	// Dir holds the daemon's socket, data-root and logs, and the registries'
	// storage.
	Dir string
	// Host is the daemon's DOCKER_HOST (unix://.../docker.sock).
	Host string
	// Client talks to the daemon, for test setup.
	Client *client.Client

	dockerd    *exec.Cmd
	dockerdErr chan error
	mu         sync.Mutex // guards registries: parallel tests start them
	registries []*Registry
}

// Missing says why the test bed can't run on this machine, or "" if it can.
func Missing() string {
	if short() {
		return "-short: the real servers are not started"
	}
	var why []string
	if os.Geteuid() != 0 {
		why = append(why, "not running as root (dockerd needs it)")
	}
	for _, bin := range []string{"dockerd", "containerd", "docker-registry"} {
		if _, err := exec.LookPath(bin); err != nil {
			why = append(why, bin+" not found (apt-get install docker.io docker-registry)")
		}
	}
	return strings.Join(why, "; ")
}

// Run is a TestMain body: it starts a Bed into *bed, runs the tests and stops
// the Bed. See the package doc for what happens when it can't start.
func Run(m *testing.M, bed **Bed) int {
	if why := Missing(); why != "" {
		if os.Getenv("CI") == "true" && !short() {
			fmt.Fprintf(os.Stderr, "testbed: %s; under CI=true the real test bed is required\n", why)
			return 1
		}
		fmt.Fprintf(os.Stderr, "testbed: %s; tests that need dockerd and registries will be skipped\n", why)
		return m.Run()
	}
	b, err := Start()
	if err != nil {
		fmt.Fprintf(os.Stderr, "testbed: %v\n", err)
		return 1
	}
	*bed = b
	code := m.Run()
	if err := b.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "testbed: stopping: %v\n", err)
	}
	return code
}

// short is go test -short, read in TestMain before m.Run parses the flags;
// false outside a test binary (the benchmarks under bench/ use the bed too).
func short() bool {
	if !testing.Testing() {
		return false
	}
	if !flag.Parsed() {
		flag.Parse()
	}
	return testing.Short()
}

// Need skips t when the test bed is not running (never under CI=true: Run
// fails the package there before any test runs).
func Need(t testing.TB, b *Bed) {
	t.Helper()
	if b == nil {
		t.Skip("needs the real test bed (root, dockerd, docker-registry)")
	}
}

// ContainerdStore reports whether the bed's daemon was configured for the
// containerd image store (PREFETCH_TESTBED_DAEMON_JSON turning on the
// containerd-snapshotter feature); the default bed, with a graph driver
// named on the command line, keeps images in the classic store.
func ContainerdStore() bool {
	var conf struct {
		Features map[string]bool `json:"features"`
	}
	if json.Unmarshal([]byte(daemonJSON()), &conf) != nil {
		return false
	}
	return conf.Features["containerd-snapshotter"]
}

// daemonJSON is the bed's daemon.json: PREFETCH_TESTBED_DAEMON_JSON, "{}"
// when unset.
func daemonJSON() string { return cmp.Or(os.Getenv("PREFETCH_TESTBED_DAEMON_JSON"), "{}") }

// Start starts a private dockerd and waits until it answers.
func Start() (*Bed, error) {
	// Unix socket paths are limited to ~100 bytes: keep the directory short.
	dir, err := os.MkdirTemp("/tmp", "pf")
	if err != nil {
		return nil, err
	}
	b := &Bed{Dir: dir, Host: "unix://" + filepath.Join(dir, "docker.sock")}
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(daemonJSON()+"\n"), 0o644); err != nil {
		return nil, err
	}
	if err := b.startDocker(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if b.Client, err = client.New(client.WithHost(b.Host)); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.waitDocker(60 * time.Second); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// startDocker starts dockerd on b.Dir, appending to its log.
func (b *Bed) startDocker() error {
	dir := b.Dir
	logf, err := os.OpenFile(filepath.Join(dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	b.dockerdErr = make(chan error, 1)
	b.dockerd = exec.Command("dockerd",
		"--config-file", filepath.Join(dir, "daemon.json"),
		"-H", b.Host,
		"--data-root", filepath.Join(dir, "root"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--storage-driver="+cmp.Or(os.Getenv("PREFETCH_TESTBED_STORAGE_DRIVER"), "vfs"), "--iptables=false", "--bridge=none",
		"--log-level=warn",
	)
	b.dockerd.Stdout, b.dockerd.Stderr = logf, logf
	b.dockerd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	if err := b.dockerd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting dockerd: %w", err)
	}
	errc := b.dockerdErr
	cmd := b.dockerd
	go func() { errc <- cmd.Wait(); logf.Close() }()
	return nil
}

// RestartDocker stops the daemon and starts it again on the same socket and
// data-root (its images stay), waiting until it answers.
func (b *Bed) RestartDocker() error {
	if err := b.StopDocker(); err != nil {
		return err
	}
	if err := b.startDocker(); err != nil {
		return err
	}
	return b.waitDocker(60 * time.Second)
}

func (b *Bed) waitDocker(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := b.Client.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
		cancel()
		if err == nil {
			return nil
		}
		select {
		case werr := <-b.dockerdErr:
			b.dockerdErr <- werr
			return fmt.Errorf("dockerd exited (%v); its log:\n%s", werr, b.tail("dockerd.log"))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dockerd did not answer within %s: %v; its log:\n%s", limit, err, b.tail("dockerd.log"))
		}
	}
}

func (b *Bed) tail(name string) string {
	data, _ := os.ReadFile(filepath.Join(b.Dir, name))
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// StopDocker stops the daemon (SIGTERM, then SIGKILL after 20 s).
func (b *Bed) StopDocker() error {
	if b.dockerd == nil || b.dockerd.Process == nil {
		return nil
	}
	_ = b.dockerd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.dockerdErr:
		b.dockerdErr <- err
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-b.dockerd.Process.Pid, syscall.SIGKILL)
		<-b.dockerdErr
		b.dockerdErr <- errors.New("killed")
	}
	return nil
}

// Close stops the registries and the daemon and removes Dir.
func (b *Bed) Close() error {
	b.mu.Lock()
	regs := b.registries
	b.mu.Unlock()
	for _, r := range regs {
		r.Stop()
	}
	if b.Client != nil {
		b.Client.Close()
	}
	_ = b.StopDocker()
	// dockerd bind-mounts the host's network namespace under its exec-root
	// for a --network host container and leaves it mounted when it stops.
	unmountUnder(b.Dir)
	return os.RemoveAll(b.Dir)
}

// unmountUnder detaches every mount below dir, deepest first.
func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		// Field 5 is the mount point (with spaces escaped as \040).
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}

// Registry is a running docker-registry on 127.0.0.1.
type Registry struct {
	// Addr is its host:port.
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// RegistryOptions configures a registry.
type RegistryOptions struct {
	// Users, when set, turns on htpasswd authentication with these
	// user → password pairs.
	Users map[string]string
	// Addr is the 127.0.0.1:port to listen on; empty picks a free port.
	Addr string
}

// StartRegistry starts a registry named name (its storage is Dir/name) on a
// free port of 127.0.0.1 and waits until it answers.
func (b *Bed) StartRegistry(name string, opts RegistryOptions) (*Registry, error) {
	dir := filepath.Join(b.Dir, "registry-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr := opts.Addr
	if addr == "" {
		var err error
		if addr, err = UnusedAddr(); err != nil {
			return nil, err
		}
	}
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), addr)
	if len(opts.Users) > 0 {
		var htpasswd bytes.Buffer
		for user, pw := range opts.Users {
			hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&htpasswd, "%s:%s\n", user, hash)
		}
		if err := os.WriteFile(filepath.Join(dir, "htpasswd"), htpasswd.Bytes(), 0o600); err != nil {
			return nil, err
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", filepath.Join(dir, "htpasswd"))
	}
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	r := &Registry{Addr: addr, done: make(chan struct{})}
	r.cmd = exec.Command("docker-registry", "serve", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting docker-registry: %w", err)
	}
	go func() { _ = r.cmd.Wait(); logf.Close(); close(r.done) }()
	b.mu.Lock()
	b.registries = append(b.registries, r)
	b.mu.Unlock()

	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return r, nil
			}
		}
		select {
		case <-r.done:
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			return nil, fmt.Errorf("docker-registry %s exited; its log:\n%s", name, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("docker-registry %s did not answer on %s within 30s", name, addr)
		}
	}
}

// Stop stops the registry; its storage stays.
func (r *Registry) Stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Kill()
	<-r.done
}

// UnusedAddr returns a 127.0.0.1 address no listener has at the moment
// (for a server to listen on next, or for "connection refused").
func UnusedAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// FreeAddr returns a 127.0.0.1 address nothing listens on (for "connection
// refused").
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := UnusedAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Import creates a local image named ref whose one layer holds a file made
// from seed (size bytes, deterministic), and returns its image ID. Different
// seeds make different content.
func (b *Bed) Import(ctx context.Context, ref, seed string, size int) (string, error) {
	var tarball bytes.Buffer
	if err := writeLayer(&tarball, seed, size); err != nil {
		return "", err
	}
	resp, err := b.Client.ImageImport(ctx, client.ImageImportSource{Source: &tarball, SourceName: "-"}, ref, client.ImageImportOptions{})
	if err != nil {
		return "", fmt.Errorf("importing %s: %w", ref, err)
	}
	defer resp.Close()
	var out struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	dec := json.NewDecoder(resp)
	for dec.More() {
		if err := dec.Decode(&out); err != nil {
			return "", fmt.Errorf("importing %s: %w", ref, err)
		}
		if out.Error != "" {
			return "", fmt.Errorf("importing %s: %s", ref, out.Error)
		}
	}
	return strings.TrimSpace(out.Status), nil
}

// Push pushes ref and returns the manifest digest the registry stored.
func (b *Bed) Push(ctx context.Context, ref string, auth registry.AuthConfig) (string, error) {
	hdr, err := authconfig.Encode(auth)
	if err != nil {
		return "", err
	}
	resp, err := b.Client.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: hdr})
	if err != nil {
		return "", fmt.Errorf("pushing %s: %w", ref, err)
	}
	defer resp.Close()
	var dgst string
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return "", fmt.Errorf("pushing %s: %w", ref, err)
		}
		if msg.Error != nil {
			return "", fmt.Errorf("pushing %s: %s", ref, msg.Error.Message)
		}
		if msg.Aux != nil {
			var aux struct{ Digest string }
			if json.Unmarshal(*msg.Aux, &aux) == nil && aux.Digest != "" {
				dgst = aux.Digest
			}
		}
		// The containerd image store (Docker 29) sends no aux message with
		// the digest, only the status line "<tag>: digest: <digest> size: <n>".
		if _, rest, ok := strings.Cut(msg.Status, ": digest: "); ok && dgst == "" {
			if d, _, _ := strings.Cut(rest, " "); strings.HasPrefix(d, "sha256:") {
				dgst = d
			}
		}
	}
	if dgst == "" {
		return "", fmt.Errorf("pushing %s: the daemon reported no digest", ref)
	}
	return dgst, nil
}

// Seed makes an image from seed, pushes it as ref, and removes it from the
// daemon again, so only the registry has it. It returns the manifest digest
// and the image ID.
func (b *Bed) Seed(ctx context.Context, ref, seed string, size int) (digest, id string, err error) {
	id, err = b.Import(ctx, ref, seed, size)
	if err != nil {
		return "", "", err
	}
	digest, err = b.Push(ctx, ref, registry.AuthConfig{})
	if err != nil {
		return "", "", err
	}
	return digest, id, b.Remove(ctx, id)
}

// Remove force-removes local images (by reference or ID); absent ones are
// not an error.
func (b *Bed) Remove(ctx context.Context, refs ...string) error {
	for _, ref := range refs {
		_, err := b.Client.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !strings.Contains(strings.ToLower(err.Error()), "no such image") {
			return fmt.Errorf("removing %s: %w", ref, err)
		}
	}
	return nil
}

// Images returns the tags and IDs of every local image, as "tag id" lines.
func (b *Bed) Images(ctx context.Context) (map[string]string, error) {
	res, err := b.Client.ImageList(ctx, client.ImageListOptions{All: true})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, im := range res.Items {
		for _, tag := range im.RepoTags {
			out[tag] = im.ID
		}
	}
	return out, nil
}
