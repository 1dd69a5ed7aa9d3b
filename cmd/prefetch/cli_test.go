package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/registry"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

var bed *testbed.Bed

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, &bed)) }

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestUsage(t *testing.T) {
	cfg := writeFile(t, "c.hcl", `image "a" { expected = "127.0.0.1:1/a:1" }`)
	runCLICases(t, []cliCase{
		{"no command", nil, exitUsage, "", "Usage:\n  prefetch <command>"},
		{"help", []string{"-h"}, exitOK, "Examples:\n  prefetch validate", ""},
		{"unknown command", []string{"pull"}, exitUsage, "", `unknown command "pull"`},
		{"version", []string{"version"}, exitOK, "prefetch dev\n", ""},
		{"once -h", []string{"once", "-h"}, exitOK, "Example:\n  prefetch once -config", ""},
		{"validate -h", []string{"validate", "-h"}, exitOK, "Usage: prefetch validate -config FILE", ""},
		{"once without config", []string{"once"}, exitUsage, "", "-config is required"},
		{"bad flag", []string{"once", "-jsn"}, exitUsage, "", "flag provided but not defined: -jsn"},
		{"bad log format", []string{"once", "-config", cfg, "-log-format", "xml"}, exitUsage, "", `-log-format "xml": want json or text`},
		{"unknown image name", []string{"once", "-config", cfg, "b"}, exitUsage, "", `no image "b" in the config (it has: a)`},
		{"missing config file", []string{"once", "-config", "/nonexistent/c.hcl"}, exitUsage, "", "reading config: open /nonexistent/c.hcl"},
	})
}

// cliCase is one command line and what it must give: the exit code, and
// text stdout and stderr must each contain.
type cliCase struct {
	name   string
	args   []string
	code   int
	stdout string
	stderr string
}

func runCLICases(t *testing.T, cases []cliCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("got exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout with %q, stderr with %q", code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}

// TestOnceFlagsAfterNames: once takes its flags before or after the image
// names; -- ends the flags; a flag it can't parse is refused on stderr,
// leaving stdout (which -json makes a document) empty.
func TestOnceFlagsAfterNames(t *testing.T) {
	cfg := writeFile(t, "c.hcl", "docker {\n  host = \"unix:///nonexistent/docker.sock\"\n}\nimage \"a\" { expected = \"127.0.0.1:1/a:1\" }\n")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"a flag after a name", []string{"once", "-config", cfg, "a", "-log-format", "xml"}, exitUsage, `prefetch once: -log-format "xml": want json or text`},
		{"-json after a name", []string{"once", "-config", cfg, "a", "-json"}, exitFailed, "reaching the Docker daemon at unix:///nonexistent/docker.sock"},
		{"flags between names", []string{"once", "a", "-config", cfg, "b"}, exitUsage, `no image "b" in the config (it has: a)`},
		{"-- ends the flags", []string{"once", "-config", cfg, "--", "-json"}, exitUsage, `no image "-json" in the config (it has: a)`},
		{"an unknown flag after a name", []string{"once", "-config", cfg, "a", "-jsn"}, exitUsage, "flag provided but not defined: -jsn\nsee 'prefetch once -h'\n"},
		{"a flag without its value", []string{"once", "-config", cfg, "a", "-log-level"}, exitUsage, "flag needs an argument: -log-level\nsee 'prefetch once -h'\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code || stdout != "" || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("got exit %d\nstdout: %s\nstderr: %s\nwant exit %d, no stdout, stderr with %q", code, stdout, stderr, tc.code, tc.stderr)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	good := writeFile(t, "good.hcl", "image \"a\" {\n  expected = \"reg:5000/a\"\n}\n")
	code, stdout, _ := runCLI(t, "validate", "-config", good)
	if code != exitOK || !strings.Contains(stdout, good+":2:14: warning: image \"a\": expected \"reg:5000/a\" has no tag") || !strings.Contains(stdout, good+": ok: 1 image(s), 0 auth block(s)") {
		t.Errorf("good config: exit %d, stdout:\n%s", code, stdout)
	}
	t.Setenv("PREFETCH_TEST_UNSET_PASSWORD", "")
	os.Unsetenv("PREFETCH_TEST_UNSET_PASSWORD")
	missing := filepath.Join(t.TempDir(), "missing")
	auths := writeFile(t, "auths.hcl", fmt.Sprintf("image \"a\" {\n  expected = \"reg:5000/a:1\"\n}\nauth \"reg:5000\" {\n  username = \"u\"\n  password_file = %q\n}\nauth \"ghcr.io\" {\n  username = \"u\"\n  password_env = \"PREFETCH_TEST_UNSET_PASSWORD\"\n}\n", missing))
	code, stdout, _ = runCLI(t, "validate", "-config", auths)
	for _, want := range []string{
		auths + `:4:1: warning: reading password_file of auth "reg:5000": open ` + missing + ": no such file or directory; pulls from reg:5000 can't authenticate until prefetch can read it\n",
		auths + `:8:1: warning: reading password_env of auth "ghcr.io": environment variable PREFETCH_TEST_UNSET_PASSWORD is not set; pulls from ghcr.io can't authenticate until it is set where prefetch runs` + "\n",
		auths + ": ok: 1 image(s), 2 auth block(s)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("auth blocks whose passwords can't be had: stdout lacks %q:\n%s", want, stdout)
		}
	}
	if code != exitOK {
		t.Errorf("auth blocks whose passwords can't be had: got exit %d, want %d (warnings)", code, exitOK)
	}

	bad := writeFile(t, "bad.hcl", "image \"a\" {\n  expected = \"A\"\n  digest = \"sha256:xyz\"\n}\nimage \"a\" {\n  expected = \"b:1\"\n}\n")
	code, stdout, _ = runCLI(t, "validate", "-config", bad)
	for _, want := range []string{
		bad + `:2:14: error: image "a": expected "A" is not a valid image reference`,
		bad + `:3:12: error: image "a": digest "sha256:xyz" is malformed`,
		bad + `:5:7: error: duplicate image "a"; the first is at line 1`,
		"prefetch: 3 problem(s) in " + bad,
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("bad config: stdout lacks %q:\n%s", want, stdout)
		}
	}
	if code != exitUsage {
		t.Errorf("bad config: got exit %d, want %d", code, exitUsage)
	}
	if code, _, stderr := runCLI(t, "once", "-config", bad); code != exitUsage || !strings.Contains(stderr, bad+":2:14: error:") {
		t.Errorf("once with a bad config: exit %d, stderr:\n%s", code, stderr)
	}
}

// TestWrongFile: a file that is no config (a binary, a huge file, one
// with a thousand problems) gets a bounded answer from every command.
func TestWrongFile(t *testing.T) {
	binary := writeFile(t, "binary.hcl", "\x7fELF\x02\x01\x01\x00"+strings.Repeat("\x00\xff\x10", 700))
	huge := writeFile(t, "huge.hcl", strings.Repeat("# not a config, a log that was written here by mistake\n", 180_000))
	var many strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&many, "x%d = 1\n", i)
	}
	many.WriteString("image \"a\" { expected = \"reg:5000/a:1\" }\n")
	manyProblems := writeFile(t, "many.hcl", many.String())
	lock := filepath.Join(t.TempDir(), "lock")
	for _, tc := range []struct {
		file  string
		want  []string // in order
		lines int
	}{
		{binary, []string{binary + ":1:8: error: the file is not text: a NUL byte at byte offset 7; a config is UTF-8 text\n", "prefetch: 1 problem(s) in " + binary + "\n"}, 2},
		{huge, []string{huge + ": error: the file is 9900000 bytes, larger than any config: a config is at most 1048576 bytes (1 MiB)\n"}, 2},
		{manyProblems, []string{manyProblems + `:1:1: error: Unsupported argument: An argument named "x0" is not expected here.`, manyProblems + `:20:1: error: Unsupported argument: An argument named "x19"`, "\nand 980 more\nprefetch: 1000 problem(s) in " + manyProblems + "\n"}, 22},
	} {
		for _, args := range [][]string{
			{"validate", "-config", tc.file},
			{"once", "-config", tc.file},
			{"run", "-config", tc.file, "-listen", "", "-lock-file", lock},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var out, errOut bytes.Buffer
			code := run(ctx, args, &out, &errOut)
			cancel()
			got := out.String() + errOut.String()
			rest, ok := got, true
			for _, w := range tc.want {
				_, after, found := strings.Cut(rest, w)
				ok, rest = ok && found, after
			}
			if code != exitUsage || !ok || strings.Count(got, "\n") != tc.lines {
				t.Errorf("%s %s: got exit %d, %d lines:\n%.3000s\nwant exit %d, %d lines with, in order, %q", args[0], filepath.Base(tc.file), code, strings.Count(got, "\n"), got, exitUsage, tc.lines, tc.want)
			}
		}
	}
}

// TestEmptyConfig: a config with no image block (an empty or truncated
// render) is a config error for every command, unless it says allow_empty.
func TestEmptyConfig(t *testing.T) {
	empty := writeFile(t, "empty.hcl", "")
	const want = ":1:1: error: no image blocks: a config with no image blocks would drop every image the agent keeps"
	lock := filepath.Join(t.TempDir(), "lock")
	for _, args := range [][]string{
		{"validate", "-config", empty},
		{"once", "-config", empty},
		{"run", "-config", empty, "-listen", "", "-lock-file", lock},
	} {
		// An agent that did start would run until stopped.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var out, errOut bytes.Buffer
		code := run(ctx, args, &out, &errOut)
		cancel()
		stdout, stderr := out.String(), errOut.String()
		if code != exitUsage || !strings.Contains(stdout+stderr, empty+want) {
			t.Errorf("%s: got exit %d\nstdout: %s\nstderr: %s\nwant exit %d and %q", args[0], code, stdout, stderr, exitUsage, empty+want)
		}
	}
	allowed := writeFile(t, "allowed.hcl", "allow_empty = true\n")
	if code, stdout, _ := runCLI(t, "validate", "-config", allowed); code != exitOK || stdout != allowed+": ok: 0 image(s), 0 auth block(s)\n" {
		t.Errorf("allow_empty: got exit %d, stdout %q; want ok", code, stdout)
	}
}

func TestOnceDockerUnreachable(t *testing.T) {
	cfg := writeFile(t, "c.hcl", "docker {\n  host = \"unix:///nonexistent/docker.sock\"\n}\nimage \"a\" { expected = \"127.0.0.1:1/a:1\" }\n")
	code, stdout, stderr := runCLI(t, "once", "-config", cfg)
	if code != exitFailed || stdout != "" || !strings.Contains(stderr, "reaching the Docker daemon at unix:///nonexistent/docker.sock") {
		t.Errorf("got exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

// TestOnce runs the command as an operator bootstrapping a node would: the
// in-cluster registry is down, a source has the image.
func TestOnce(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	upstream, proxy := startProxied(t, "cli-upstream")
	if _, _, err := bed.Seed(ctx, upstream.Addr+"/traefik:v3.1.2", "cli-traefik", 64<<10); err != nil {
		t.Fatal(err)
	}
	down := testbed.FreeAddr(t)
	cfg := writeFile(t, "config.hcl", fmt.Sprintf(`
docker {
  host = %q
}
image "traefik" {
  expected = "%s/traefik:v3.1.2"
  sources  = ["%s/traefik:v3.1.2"]
}
image "missing" {
  expected = "%s/missing:1"
}
`, bed.Host, down, proxy.Addr, down))

	code, stdout, stderr := runCLI(t, "once", "-config", cfg)
	if code != exitFailed {
		t.Errorf("got exit %d, want %d (one image can't be had)\nstderr:\n%s", code, exitFailed, stderr)
	}
	for _, want := range []string{
		"IMAGE    EXPECTED",
		fmt.Sprintf("traefik  %s/traefik:v3.1.2  retagged from %s/traefik:v3.1.2", down, proxy.Addr),
		fmt.Sprintf("missing  %s/missing:1", down),
		"missing: failed:\n  expected: pulling " + down + "/missing:1",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, `"level":"ERROR","msg":"image not available","image":"`+down+`/missing:1"`) {
		t.Errorf("stderr lacks the JSON error line:\n%s", stderr)
	}

	// A second run on the converged node, for the image it has: no layer
	// fetched, exit 0, and -json.
	proxy.ResetCounts()
	code, stdout, stderr = runCLI(t, "once", "-config", cfg, "traefik", "-json")
	if code != exitOK {
		t.Fatalf("second run: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	var doc struct {
		OK     bool
		Images []map[string]any
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
		t.Fatalf("-json output: %v\n%s", err, stdout)
	}
	if !doc.OK || len(doc.Images) != 1 || doc.Images[0]["result"] != "up to date" || doc.Images[0]["source"] != proxy.Addr+"/traefik:v3.1.2" {
		t.Errorf("got %s, want one image up to date from the source", stdout)
	}
	if n := proxy.Count("GET blob"); n != 0 {
		t.Errorf("second run fetched %d blobs, want none", n)
	}
}

// TestOnceCredentials: a registry with htpasswd auth, credentials from a
// Docker config.json (auths) or the config's auth block; the password is
// in no output, whether the pull works or not.
func TestOnceCredentials(t *testing.T) {
	testbed.Need(t, bed)
	ctx := context.Background()
	const user, password = "prefetch-bot", "S3cr3t-must-not-appear"
	reg, err := bed.StartRegistry("cli-auth", testbed.RegistryOptions{Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	ref := reg.Addr + "/private/app:1"
	id, err := bed.Import(ctx, ref, "cli-private", 4096)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bed.Push(ctx, ref, registry.AuthConfig{Username: user, Password: password, ServerAddress: reg.Addr}); err != nil {
		t.Fatal(err)
	}
	if err := bed.Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("docker {\n  host = %q\n}\nimage \"app\" {\n  expected = %q\n}\n", bed.Host, ref)
	dockerConfig := func(pw string) string {
		dir := t.TempDir()
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pw))
		if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.Addr, auth)), 0o600); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	pwFile := writeFile(t, "pw", password+"\n")
	wrongFile := writeFile(t, "wrong", password+"-wrong\n")
	authBlock := func(file string) string {
		return fmt.Sprintf("auth %q {\n  username = %q\n  password_file = %q\n}\n", reg.Addr, user, file)
	}
	missingFile := filepath.Join(t.TempDir(), "missing")
	t.Setenv("PREFETCH_TEST_EMPTY_PASSWORD", "")
	emptyEnv := fmt.Sprintf("auth %q {\n  username = %q\n  password_env = \"PREFETCH_TEST_EMPTY_PASSWORD\"\n}\n", reg.Addr, user)

	for _, tc := range []struct {
		name         string
		dockerConfig string
		extra        string
		code         int
		stdout       string // in the summary, when not empty
	}{
		{"anonymous", t.TempDir(), "", exitFailed, ""},
		{"config.json auths", dockerConfig(password), "", exitOK, ""},
		{"config.json, wrong password", dockerConfig(password + "-wrong"), "", exitFailed, ""},
		{"auth block", t.TempDir(), authBlock(pwFile), exitOK, ""},
		{"auth block wins over config.json", dockerConfig(password + "-wrong"), authBlock(pwFile), exitOK, ""},
		{"auth block, wrong password", t.TempDir(), authBlock(wrongFile), exitFailed, ""},
		{"auth block, password_file missing", t.TempDir(), authBlock(missingFile), exitFailed, "pulling " + ref + `: reading password_file of auth "` + reg.Addr + `": open ` + missingFile},
		{"auth block, password_env empty", t.TempDir(), emptyEnv, exitFailed, "pulling " + ref + `: reading password_env of auth "` + reg.Addr + `": environment variable PREFETCH_TEST_EMPTY_PASSWORD is empty`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := bed.Remove(ctx, ref); err != nil {
				t.Fatal(err)
			}
			t.Setenv("DOCKER_CONFIG", tc.dockerConfig)
			cfg := writeFile(t, "c.hcl", base+tc.extra)
			code, stdout, stderr := runCLI(t, "once", "-config", cfg, "-log-level", "debug")
			if code != tc.code || !strings.Contains(stdout, tc.stdout) {
				t.Errorf("got exit %d, want %d and a summary with %q\nstdout: %s\nstderr: %s", code, tc.code, tc.stdout, stdout, stderr)
			}
			b64 := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
			for _, secret := range []string{password, b64} {
				if strings.Contains(stdout, secret) || strings.Contains(stderr, secret) {
					t.Errorf("the password appears in the output:\nstdout: %s\nstderr: %s", stdout, stderr)
				}
			}
		})
	}
}
