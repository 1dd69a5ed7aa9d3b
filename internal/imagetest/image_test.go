package imagetest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

var bed *testbed.Bed

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, &bed)) }

const (
	baseRef  = "local-go:1.26"
	imageRef = "nomad-prefetch:imagetest"
	version  = "v0.0.0-imagetest"
)

// docker runs the docker CLI against the test bed's daemon, with an empty
// client config of its own.
type docker struct {
	bin string
	env []string
}

func newDocker(t *testing.T) docker {
	t.Helper()
	bin, err := exec.LookPath("docker")
	if err != nil {
		t.Fatalf("the docker CLI is needed (apt-get install docker.io): %v", err)
	}
	env := append(os.Environ(), "DOCKER_HOST="+bed.Host, "DOCKER_CONFIG="+t.TempDir(), "DOCKER_BUILDKIT=0")
	return docker{bin: bin, env: env}
}

// run runs docker with args and returns its stdout and stderr.
func (d docker) run(ctx context.Context, limit time.Duration, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, args...)
	cmd.Env = d.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestImage builds the Dockerfile and runs what it made.
func TestImage(t *testing.T) {
	testbed.Need(t, bed)
	d := newDocker(t)
	ctx := t.Context()
	env := hostGoEnv(t)

	start := time.Now()
	importBase(ctx, t, baseRef, env)
	imported := time.Since(start)

	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	goproxy, served := moduleProxy(t, env)
	start = time.Now()
	out, errOut, err := d.run(ctx, 15*time.Minute, "build", "--network", "host",
		"--build-arg", "GO_IMAGE="+baseRef,
		"--build-arg", "VERSION="+version,
		"--build-arg", "GOPROXY="+goproxy,
		"-t", imageRef, root)
	if err != nil {
		t.Fatalf("docker build: %v\n%s\n%s", err, tail(out, 6000), errOut)
	}
	t.Logf("base imported in %s, image built in %s; go mod download got %s",
		imported.Round(time.Millisecond), time.Since(start).Round(time.Second), served())

	t.Run("config", func(t *testing.T) {
		img, err := bed.Client.ImageInspect(ctx, imageRef)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := img.Config.User, "65532:65532"; got != want {
			t.Errorf("USER is %q, want %q", got, want)
		}
		if img.Size > 60<<20 {
			t.Errorf("the image is %d MB; two static binaries on scratch should be far less", img.Size>>20)
		}
		// scratch: nothing but what the Dockerfile copies, so no shell.
		_, stderr, err := d.run(ctx, 2*time.Minute, "run", "--rm", imageRef, "sh", "-c", "true")
		if err == nil {
			t.Errorf("the image runs sh; want a scratch image without a shell")
		} else if !strings.Contains(stderr, "executable file not found") {
			t.Errorf("running sh: %v\n%s", err, stderr)
		}
	})

	t.Run("commands", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string // in stdout or stderr
		}{
			{[]string{"prefetch", "-h"}, "prefetch <command> [flags]"},
			{[]string{"prefetch", "version"}, "prefetch " + version + "\n"},
			{[]string{"eventlog", "-h"}, "-state-file"},
			{[]string{"eventlog", "-version"}, "eventlog " + version + "\n"},
		} {
			stdout, stderr, err := d.run(ctx, 2*time.Minute, append([]string{"run", "--rm", imageRef}, tc.args...)...)
			if err != nil {
				t.Errorf("docker run %s: %v\n%s%s", strings.Join(tc.args, " "), err, stdout, stderr)
				continue
			}
			if got := stdout + stderr; !strings.Contains(got, tc.want) {
				t.Errorf("docker run %s printed:\n%s\nwant it to contain %q", strings.Join(tc.args, " "), got, tc.want)
			}
		}
	})

	t.Run("once", func(t *testing.T) { testOnce(ctx, t, d) })
}

// testOnce runs `prefetch once` from the image, as its non-root user with
// the Docker socket's group added, against a real registry: the expected
// registry is down, so the image is pulled from its source and retagged.
func testOnce(ctx context.Context, t *testing.T, d docker) {
	reg, err := bed.StartRegistry("imagetest", testbed.RegistryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	source := reg.Addr + "/imagetest/app:1"
	_, id, err := bed.Seed(ctx, source, "imagetest", 2048)
	if err != nil {
		t.Fatal(err)
	}
	expected := testbed.FreeAddr(t) + "/imagetest/app:1"

	// The container's user must read the config; the directory is mounted,
	// so only its own mode matters.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf("image \"app\" {\n  expected = %q\n  sources  = [%q]\n}\n", expected, source)
	if err := os.WriteFile(filepath.Join(dir, "config.hcl"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := strings.TrimPrefix(bed.Host, "unix://")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	gid := fi.Sys().(*syscall.Stat_t).Gid
	args := func(extra ...string) []string {
		a := []string{"run", "--rm", "--network", "host",
			"-v", sock + ":/var/run/docker.sock", "-v", dir + ":/etc/prefetch:ro"}
		a = append(a, extra...)
		return append(a, imageRef, "prefetch", "once", "-config", "/etc/prefetch/config.hcl", "-json")
	}

	// Without the socket's group the non-root user can't reach the daemon
	// (unless the socket is world-writable, which no daemon makes it).
	if fi.Mode().Perm()&0o002 == 0 {
		stdout, stderr, err := d.run(ctx, 2*time.Minute, args()...)
		if err == nil {
			t.Errorf("prefetch once without the socket's group succeeded; the image's user is root?\n%s", stdout)
		} else if !strings.Contains(stderr+stdout, "permission denied") {
			t.Errorf("prefetch once without the socket's group: %v; want permission denied in\n%s%s", err, stdout, stderr)
		}
	}

	// As the job file runs it: read-only root, no capabilities, no new
	// privileges (nomad/jobs/prefetch.nomad.hcl).
	stdout, stderr, err := d.run(ctx, 3*time.Minute, args("--group-add", fmt.Sprint(gid),
		"--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")...)
	if err != nil {
		t.Fatalf("prefetch once in the container: %v\n%s\n%s", err, stdout, stderr)
	}
	var summary struct {
		OK     bool `json:"ok"`
		Images []struct {
			Name, Result, Source string
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(stdout), &summary); err != nil {
		t.Fatalf("prefetch once -json printed %q: %v", stdout, err)
	}
	if !summary.OK || len(summary.Images) != 1 || summary.Images[0].Result != "retagged" || summary.Images[0].Source != source {
		t.Errorf("prefetch once -json printed %s; want app retagged from %s", stdout, source)
	}
	images, err := bed.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := images[expected]; got != id {
		t.Errorf("after prefetch once, %s is image %q, want %q (the source's)", expected, got, id)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
