package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	t.Parallel()
	src := `
concurrency   = 3
pull_timeout  = "5m"
stall_timeout = "30s"
docker {
  host = "unix:///run/docker.sock"
}
image "traefik" {
  expected = "registry.service.consul:5000/traefik:v3.1.2"
  sources  = ["traefik:v3.1.2", "ghcr.io/acme/traefik:v3.1.2"]
  digest   = "sha256:4f7e1e1e4b36b7f5f9d5b6f4b0a9c8e4b2a1d0c9f8e7d6c5b4a39281706f5e4d"
  platform = "linux/aarch64"
}
image "registry" {
  expected = "registry:2.8.3"
}
auth "index.docker.io" {
  username     = "bot"
  password_env = "HUB_TOKEN"
}
auth "ghcr.io" {
  username      = "bot"
  password_file = "/secrets/ghcr"
}
`
	got, err := Parse("c.hcl", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := Config{
		File:         "c.hcl",
		Docker:       Docker{Host: "unix:///run/docker.sock"},
		Concurrency:  3,
		PullTimeout:  5 * time.Minute,
		StallTimeout: 30 * time.Second,

		ResyncInterval: DefaultResyncInterval,
		RetryInitial:   DefaultRetryInitial,
		RetryMax:       DefaultRetryMax,
		AlertAfter:     DefaultAlertAfter,
		Images: []Image{
			{
				Name:     "traefik",
				Expected: "registry.service.consul:5000/traefik:v3.1.2",
				Sources:  []string{"docker.io/library/traefik:v3.1.2", "ghcr.io/acme/traefik:v3.1.2"},
				Digest:   "sha256:4f7e1e1e4b36b7f5f9d5b6f4b0a9c8e4b2a1d0c9f8e7d6c5b4a39281706f5e4d",
				Platform: "linux/arm64",
				Pos:      Pos{File: "c.hcl", Line: 8, Col: 1},
			},
			{
				Name:     "registry",
				Expected: "docker.io/library/registry:2.8.3",
				Pos:      Pos{File: "c.hcl", Line: 14, Col: 1},
			},
		},
		Auths: []Auth{
			{Host: "docker.io", Username: "bot", PasswordEnv: "HUB_TOKEN", Pos: Pos{File: "c.hcl", Line: 17, Col: 1}},
			{Host: "ghcr.io", Username: "bot", PasswordFile: "/secrets/ghcr", Pos: Pos{File: "c.hcl", Line: 21, Col: 1}},
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseDefaults(t *testing.T) {
	t.Parallel()
	got, err := Parse("c.hcl", []byte(`image "a" { expected = "reg:5000/a:1" }`))
	if err != nil {
		t.Fatal(err)
	}
	if got.Concurrency != DefaultConcurrency || got.PullTimeout != DefaultPullTimeout || got.StallTimeout != DefaultStallTimeout || got.Docker.Host != "" ||
		got.ResyncInterval != DefaultResyncInterval || got.RetryInitial != DefaultRetryInitial || got.RetryMax != DefaultRetryMax || got.AlertAfter != DefaultAlertAfter {
		t.Errorf("got %+v, want the defaults", got)
	}
	got.Images = nil // the rest is Default, the one place defaults are put together
	if want := Default("c.hcl"); !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant Default %+v", got, want)
	}
	if len(got.Warnings) != 0 {
		t.Errorf("got warnings %v, want none", got.Warnings)
	}
}

func TestParseWarnings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, src, want string
	}{
		{"no tag", `image "a" { expected = "reg:5000/a" }`, `c.hcl:1:24: image "a": expected "reg:5000/a" has no tag or the tag latest`},
		{"latest", "\nimage \"a\" {\n expected = \"a:latest\"\n}", `c.hcl:3:13: image "a": expected "a:latest" has no tag or the tag latest`},
		// Served from a source only on the containerd image store: allowed,
		// said (issue 9 lifted the blanket refusal).
		{"digest expected with sources", "image \"a\" {\n expected = \"a@sha256:" + strings.Repeat("4f", 32) + "\"\n sources = [\"b:1\"]\n}", `c.hcl:2:13: image "a": expected names a digest: its sources can serve it only on Docker's containerd image store`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("c.hcl", []byte(tc.src))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(cfg.Warnings) != 1 || !strings.HasPrefix(cfg.Warnings[0].String(), tc.want) {
				t.Errorf("got warnings %v, want one starting %q", cfg.Warnings, tc.want)
			}
		})
	}
}

// TestParseAllowEmpty: a config that means to keep no image says so, and
// is then no error and no warning.
func TestParseAllowEmpty(t *testing.T) {
	t.Parallel()
	for _, src := range []string{"allow_empty = true\n", "# nothing to keep on this node\nallow_empty = true\nconcurrency = 1\n"} {
		cfg, err := Parse("c.hcl", []byte(src))
		if err != nil || len(cfg.Images) != 0 || !cfg.AllowEmpty || len(cfg.Warnings) != 0 {
			t.Errorf("%q: got %+v, %v; want an empty config that allows it, with no warning", src, cfg, err)
		}
	}
	cfg, err := Parse("c.hcl", []byte("allow_empty = true\nimage \"a\" { expected = \"reg:5000/a:1\" }\n"))
	if err != nil || len(cfg.Images) != 1 {
		t.Errorf("allow_empty with an image: got %+v, %v; want the image", cfg, err)
	}
}

func TestParseDigestReference(t *testing.T) {
	t.Parallel()
	const d = "sha256:4f7e1e1e4b36b7f5f9d5b6f4b0a9c8e4b2a1d0c9f8e7d6c5b4a39281706f5e4d"
	cfg, err := Parse("c.hcl", []byte(`image "a" { expected = "reg:5000/a@`+d+`" }`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Images[0]; got.Digest != d || got.Expected != "reg:5000/a@"+d {
		t.Errorf("got %+v, want the digest taken from expected", got)
	}
}

// TestParseErrors is the table of malformed inputs: each names the line and
// column and says what is wrong.
func TestParseErrors(t *testing.T) {
	t.Parallel()
	const d = "sha256:4f7e1e1e4b36b7f5f9d5b6f4b0a9c8e4b2a1d0c9f8e7d6c5b4a39281706f5e4d"
	// img is a valid image, for the cases about something else: a config
	// with no image block is an error of its own.
	const img = "\nimage \"z\" { expected = \"reg:5000/z:1\" }\n"
	const empty = "c.hcl:1:1: no image blocks: a config with no image blocks would drop every image the agent keeps"
	for _, tc := range []struct {
		name string
		src  string
		want []string // each a prefix of one reported problem, in order
	}{
		{"empty file", "", []string{empty}},
		{"only comments, as a truncated render", "# Rendered by consul-template. Do not edit.\n", []string{empty + " (an empty or truncated render?); if this node is to keep no image, set allow_empty = true"}},
		{"settings but no image", "concurrency = 1\n", []string{empty}},
		{"allow_empty false", "allow_empty = false\n", []string{empty}},
		{"allow_empty not a bool", "allow_empty = \"yes\"\n", []string{`c.hcl:1:15: allow_empty must be true or false, got string`}},
		{"no image and other problems", "concurency = 2\n", []string{`c.hcl:1:1: Unsupported argument: An argument named "concurency" is not expected here. Did you mean "concurrency"?`, empty}},
		{"syntax", "image \"a\" {\n  expected = \n}", []string{"c.hcl:2:14: Invalid expression"}},
		{"unclosed block", "image \"a\" {\n expected = \"a:1\"\n", []string{"c.hcl:1:11: Unclosed configuration block"}},
		{"unknown top-level attribute", "concurency = 2\n" + img, []string{`c.hcl:1:1: Unsupported argument: An argument named "concurency" is not expected here. Did you mean "concurrency"?`}},
		{"unknown block", "imgae \"a\" {}\n" + img, []string{`c.hcl:1:1: Unsupported block type: Blocks of type "imgae" are not expected here. Did you mean "image"?`}},
		{"unknown image attribute", "image \"a\" {\n expected = \"a:1\"\n source = [\"b:1\"]\n}", []string{`c.hcl:3:2: Unsupported argument: An argument named "source" is not expected here. Did you mean "sources"?`}},
		{"missing expected", "image \"a\" {\n sources = [\"b:1\"]\n}", []string{`c.hcl:1:11: Missing required argument: The argument "expected" is required`}},
		{"missing label", "image {\n expected = \"a:1\"\n}", []string{"c.hcl:1:7: Missing name for image"}},
		{"duplicate label", "image \"a\" { expected = \"a:1\" }\nimage \"a\" { expected = \"b:1\" }\n", []string{`c.hcl:2:7: duplicate image "a"; the first is at line 1`}},
		{"duplicate expected", "image \"a\" { expected = \"traefik:v3\" }\nimage \"b\" { expected = \"docker.io/library/traefik:v3\" }\n", []string{`c.hcl:2:1: image "b": expected "docker.io/library/traefik:v3" is already listed at line 1`}},
		{"uppercase reference", "image \"a\" { expected = \"Traefik:v3\" }", []string{`c.hcl:1:24: image "a": expected "Traefik:v3" is not a valid image reference: invalid reference format: repository name (library/Traefik) must be lowercase`}},
		{"bad tag", "image \"a\" { expected = \"traefik:v3:1\" }", []string{`c.hcl:1:24: image "a": expected "traefik:v3:1" is not a valid image reference: invalid reference format`}},
		{"bad source", "image \"a\" {\n expected = \"a:1\"\n sources = [\"b:1\", \"-x\"]\n}", []string{`c.hcl:3:12: image "a": source "-x" is not a valid image reference`}},
		{"source is expected", "image \"a\" {\n expected = \"a:1\"\n sources = [\"docker.io/library/a:1\"]\n}", []string{`c.hcl:3:12: image "a": source "docker.io/library/a:1" is the expected reference itself`}},
		{"sources not a list", "image \"a\" {\n expected = \"a:1\"\n sources = {x = 1}\n}", []string{`c.hcl:3:12: sources must be a list of strings, got object`}},
		{"expected not a string", "image \"a\" { expected = [\"a:1\"] }", []string{`c.hcl:1:24: expected must be a string, got tuple`}},
		{"number for a string", "image \"a\" { expected = 1 }", []string{`c.hcl:1:24: expected must be a string, got number`}},
		{"string for a number", "concurrency = \"2\"" + img, []string{`c.hcl:1:15: concurrency must be a whole number, got string`}},
		{"variable not allowed", "image \"a\" { expected = var.x }", []string{`c.hcl:1:24: expected: only literal values are allowed here (strings, numbers, bools, and lists and maps of them), not expressions, templates or for loops`}},
		{"function not allowed", "image \"a\" { expected = lower(\"A:1\") }", []string{`c.hcl:1:24: expected: only literal values are allowed here (strings, numbers, bools, and lists and maps of them), not expressions, templates or for loops`}},
		{"interpolation not allowed", "image \"a\" { expected = \"a:${x}\" }", []string{`c.hcl:1:29: expected: only literal values are allowed here (strings, numbers, bools, and lists and maps of them), not expressions, templates or for loops`}},
		{"for expression not allowed", "image \"a\" {\n expected = \"a:1\"\n sources = [for s in [\"b:1\"] : s]\n}", []string{`c.hcl:3:12: sources: only literal values are allowed here (strings, numbers, bools, and lists and maps of them), not expressions, templates or for loops`}},
		{"conditional inside a list", "image \"a\" {\n expected = \"a:1\"\n sources = [\"b:1\", true ? \"c:1\" : \"d:1\"]\n}", []string{`c.hcl:3:20: sources: only literal values are allowed here (strings, numbers, bools, and lists and maps of them), not expressions, templates or for loops`}},
		{"malformed digest", "image \"a\" {\n expected = \"a:1\"\n digest = \"sha256:1234\"\n}", []string{`c.hcl:3:11: image "a": digest "sha256:1234" is malformed`}},
		{"digest algorithm", "image \"a\" {\n expected = \"a:1\"\n digest = \"md5:d41d8cd98f00b204e9800998ecf8427e\"\n}", []string{`c.hcl:3:11: image "a": digest "md5:d41d8cd98f00b204e9800998ecf8427e" is malformed`}},
		{"digest disagrees with expected", "image \"a\" {\n expected = \"a@" + d + "\"\n digest = \"sha256:" + strings.Repeat("0", 64) + "\"\n}", []string{`c.hcl:2:13: image "a": expected names digest ` + d}},
		{"expected with a tag and a digest", "image \"a\" {\n expected = \"reg:5000/a:1@" + d + "\"\n}", []string{`c.hcl:2:13: image "a": expected "reg:5000/a:1@` + d + `" names both a tag and a digest, and Docker cannot tag an image with such a reference, so it would never be present: write expected = "reg:5000/a:1" with digest = "` + d + `"`}},
		{"expected with a tag and a digest, and sources", "image \"a\" {\n expected = \"a:1@" + d + "\"\n sources = [\"b:1\"]\n}", []string{`c.hcl:2:13: image "a": expected "a:1@` + d + `" names both a tag and a digest`}},
		{"unknown platform os", "image \"a\" {\n expected = \"a:1\"\n platform = \"linus/amd64\"\n}", []string{`c.hcl:3:13: image "a": platform "linus/amd64": unknown operating system "linus"`}},
		{"unknown platform arch", "image \"a\" {\n expected = \"a:1\"\n platform = \"linux/amd46\"\n}", []string{`c.hcl:3:13: image "a": platform "linux/amd46": unknown architecture "amd46"`}},
		{"platform without arch", "image \"a\" {\n expected = \"a:1\"\n platform = \"linux\"\n}", []string{`c.hcl:3:13: image "a": platform "linux": want os/arch`}},
		{"unknown variant", "image \"a\" {\n expected = \"a:1\"\n platform = \"linux/arm/v9\"\n}", []string{`c.hcl:3:13: image "a": platform "linux/arm/v9": unknown variant "v9" for arm`}},
		{"auth both passwords", "auth \"ghcr.io\" {\n username = \"u\"\n password_file = \"/p\"\n password_env = \"P\"\n}" + img, []string{`c.hcl:4:2: auth "ghcr.io": set password_file or password_env, not both`}},
		{"auth no password", "auth \"ghcr.io\" {\n username = \"u\"\n}" + img, []string{`c.hcl:1:1: auth "ghcr.io": needs password_file or password_env`}},
		{"auth no username", "auth \"ghcr.io\" {\n password_env = \"P\"\n}" + img, []string{`c.hcl:1:16: Missing required argument: The argument "username" is required`}},
		{"auth bad host", "auth \"https://ghcr.io\" {\n username = \"u\"\n password_env = \"P\"\n}" + img, []string{`c.hcl:1:6: auth "https://ghcr.io": want a registry host`}},
		{"duplicate auth", "auth \"docker.io\" {\n username = \"u\"\n password_env = \"P\"\n}\nauth \"index.docker.io\" {\n username = \"u\"\n password_env = \"P\"\n}" + img, []string{`c.hcl:5:6: duplicate auth for "docker.io"; the first is at line 1`}},
		{"concurrency zero", "concurrency = 0" + img, []string{`c.hcl:1:15: concurrency must be between 1 and 64, got 0`}},
		{"concurrency fraction", "concurrency = 1.5" + img, []string{`c.hcl:1:15: concurrency must be a whole number, got 1.5`}},
		{"bad duration", "pull_timeout = \"10 minutes\"" + img, []string{`c.hcl:1:16: pull_timeout "10 minutes" is not a duration`}},
		{"negative duration", "stall_timeout = \"-1s\"" + img, []string{`c.hcl:1:17: stall_timeout must be positive, got "-1s"`}},
		{"retry_max below retry_initial", "retry_initial = \"1m\"\nretry_max = \"30s\"" + img, []string{`c.hcl:2:13: retry_max (30s) must not be shorter than retry_initial (1m0s)`}},
		{"bad resync_interval", "resync_interval = \"often\"" + img, []string{`c.hcl:1:19: resync_interval "often" is not a duration`}},
		{"docker host scheme", "docker {\n host = \"/var/run/docker.sock\"\n}" + img, []string{`c.hcl:2:9: docker host "/var/run/docker.sock": want a URL`}},
		{"duplicate docker", "docker {}\ndocker {}" + img, []string{`c.hcl:2:1: duplicate docker block; the first is at line 1`}},
		{
			"all problems at once",
			"concurrency = \"x\"\nimage \"a\" {\n expected = \"A\"\n}\nimage \"b\" {\n expected = \"b:1\"\n platform = \"x\"\n}\nauth \"h\" {\n username = \"u\"\n}\n",
			[]string{
				`c.hcl:1:15: concurrency must be a whole number, got string`,
				`c.hcl:3:13: image "a": expected "A" is not a valid image reference`,
				`c.hcl:7:13: image "b": platform "x": want os/arch`,
				`c.hcl:9:1: auth "h": needs password_file or password_env`,
				`c.hcl:9:6: auth "h": want a registry host`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("c.hcl", []byte(tc.src))
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("got error %v, want Errors", err)
			}
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d problems:\n%v\nwant %d", len(errs), err, len(tc.want))
			}
			for i, p := range errs {
				if !strings.HasPrefix(p.String(), tc.want[i]) {
					t.Errorf("problem %d:\ngot  %s\nwant %s...", i, p, tc.want[i])
				}
			}
		})
	}
}

// TestParseBounds: each duration outside its bounds is an error naming the
// bound crossed; the bounds themselves are accepted.
func TestParseBounds(t *testing.T) {
	t.Parallel()
	const img = "\nimage \"z\" { expected = \"reg:5000/z:1\" }\n"
	for _, tc := range []struct {
		name, tooShort, floor, tooLong, ceiling string
		// extra keeps retry_max >= retry_initial whatever is tried.
		extra string
	}{
		{"retry_initial", "1ns", "100ms", "61m", "1h", "retry_max = \"24h\"\n"},
		{"retry_max", "999ms", "1s", "25h", "24h", "retry_initial = \"100ms\"\n"},
		{"resync_interval", "1ms", "1m", "169h", "168h", ""},
		{"pull_timeout", "9s", "10s", "24h1s", "24h", ""},
		{"stall_timeout", "4s", "5s", "2h", "1h", ""},
		{"alert_after", "59s", "1m", "721h", "720h", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// src sets the duration on line 2.
			src := func(value string) string {
				first := tc.extra
				if first == "" {
					first = "\n"
				}
				return first + tc.name + " = " + strconv.Quote(value) + "\n" + img
			}
			for _, v := range []struct{ value, want string }{
				{tc.tooShort, fmt.Sprintf(`c.hcl:2:%d: %s %q is shorter than its floor of %s (%s must be between %s and %s)`, len(tc.name)+4, tc.name, tc.tooShort, tc.floor, tc.name, tc.floor, tc.ceiling)},
				{tc.tooLong, fmt.Sprintf(`c.hcl:2:%d: %s %q is longer than its ceiling of %s (%s must be between %s and %s)`, len(tc.name)+4, tc.name, tc.tooLong, tc.ceiling, tc.name, tc.floor, tc.ceiling)},
			} {
				_, err := Parse("c.hcl", []byte(src(v.value)))
				var errs Errors
				if !errors.As(err, &errs) || len(errs) != 1 || errs[0].String() != v.want {
					t.Errorf("%s = %q: got %v, want %s", tc.name, v.value, err, v.want)
				}
			}
			for _, v := range []string{tc.floor, tc.ceiling} {
				if _, err := Parse("c.hcl", []byte(src(v))); err != nil {
					t.Errorf("%s = %q: got %v, want it accepted", tc.name, v, err)
				}
			}
		})
	}
}

// TestDefaultsWithinBounds: no default is refused when written out.
func TestDefaultsWithinBounds(t *testing.T) {
	t.Parallel()
	for _, l := range durationLimits {
		d := *l.field(&Config{
			PullTimeout: DefaultPullTimeout, StallTimeout: DefaultStallTimeout, ResyncInterval: DefaultResyncInterval,
			RetryInitial: DefaultRetryInitial, RetryMax: DefaultRetryMax, AlertAfter: DefaultAlertAfter,
		})
		if d < l.min || d > l.max {
			t.Errorf("%s: default %s is outside %s..%s", l.name, d, l.min, l.max)
		}
	}
}

// TestParseNotText: a file that is not UTF-8 text is refused before HCL
// sees it, as one problem at its first bad byte.
func TestParseNotText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		src  string
		want string
	}{
		{"a NUL byte", "image \"a\" {\n expected = \"a:1\"\n}\nab\x00cd", `c.hcl:4:3: the file is not text: a NUL byte at byte offset 34; a config is UTF-8 text`},
		{"invalid UTF-8 after multi-byte characters", "# café ü\n# \xff\xfe", `c.hcl:2:3: the file is not text: byte 0xff, which is not UTF-8, at byte offset 13; a config is UTF-8 text`},
		{"a binary file", "\x7fELF\x02\x01\x01\x00\x00\x00" + strings.Repeat("\x00\xff", 1000), `c.hcl:1:8: the file is not text: a NUL byte at byte offset 7`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("c.hcl", []byte(tc.src))
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != 1 || !strings.HasPrefix(errs[0].String(), tc.want) {
				t.Errorf("got %v, want one problem starting %q", err, tc.want)
			}
		})
	}
}

// TestParseTooLarge: no real config is larger than MaxSize; a file that is
// is refused as one problem that says how large it is.
func TestParseTooLarge(t *testing.T) {
	t.Parallel()
	src := bytes.Repeat([]byte("# padding\n"), MaxSize/10+1)
	_, err := Parse("c.hcl", src)
	want := fmt.Sprintf("c.hcl: the file is %d bytes, larger than any config: a config is at most 1048576 bytes (1 MiB)", len(src))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1 || errs[0].String() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

// TestLoadReadsAtMostTheLimit: Load stops reading a file larger than
// MaxSize after MaxSize+1 bytes and says how large it is; a pipe that never
// ends is refused too, without waiting for its end.
func TestLoadReadsAtMostTheLimit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	big := filepath.Join(dir, "big.hcl")
	if err := os.WriteFile(big, bytes.Repeat([]byte("# padding\n"), 1_000_000), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(big)
	if want := big + ": the file is 10000000 bytes, larger than any config"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want %s...", err, want)
	}

	fifo := filepath.Join(dir, "fifo.hcl")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	// The writer writes one byte more than the limit, then holds the pipe
	// open until the test ends: a Load that read to the end would block.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		_, _ = f.Write(bytes.Repeat([]byte("#"), MaxSize+1))
		<-stop
	}()
	done := make(chan error, 1)
	go func() { _, err := Load(fifo); done <- err }()
	select {
	case err := <-done:
		if want := fifo + ": the file is larger than any config: a config is at most 1048576 bytes (1 MiB)"; err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Load of a pipe that had sent more than MaxSize did not return: it reads past the limit")
	}
}

// TestErrorsBounded: however many problems a file has, Error() shows the
// first MaxProblems and counts the rest (the agent logs it as one line),
// while Errors still holds them all; one problem's message is bounded too,
// when it quotes a long value.
func TestErrorsBounded(t *testing.T) {
	t.Parallel()
	var src strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&src, "x%d = 1\n", i)
	}
	src.WriteString("image \"a\" { expected = \"reg:5000/" + strings.Repeat("A", 100_000) + ":1\" }\n")
	_, err := Parse("c.hcl", []byte(src.String()))
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 1001 {
		t.Fatalf("got %d problems (%v), want 1001", len(errs), err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != MaxProblems+1 || lines[0] != `c.hcl:1:1: Unsupported argument: An argument named "x0" is not expected here.` || lines[MaxProblems] != "and 981 more" {
		t.Errorf("Error() is %d lines, first %q, last %q; want %d, the first problem, and 981 more", len(lines), lines[0], lines[len(lines)-1], MaxProblems+1)
	}
	long := errs[1000]
	if len(long.Msg) > maxMessage || !strings.HasPrefix(long.Msg, `image "a": expected "reg:5000/AAAA`) || !strings.Contains(long.Msg, " … ") {
		t.Errorf("the problem quoting a 100,000-byte value is %d bytes: %.300s...; want at most %d, cut in the middle", len(long.Msg), long.Msg, maxMessage)
	}
}

// TestWarningsBounded: warnings are capped like errors, the rest counted.
func TestWarningsBounded(t *testing.T) {
	t.Parallel()
	var src strings.Builder
	for i := range 30 {
		fmt.Fprintf(&src, "image \"a%d\" { expected = \"reg:5000/a%d\" }\n", i, i)
	}
	cfg, err := Parse("c.hcl", []byte(src.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != MaxProblems+1 || !strings.HasPrefix(cfg.Warnings[0].String(), `c.hcl:1:25: image "a0"`) || cfg.Warnings[MaxProblems].String() != "c.hcl: and 10 more warnings" {
		t.Errorf("got %d warnings, the last %v; want %d and a count of the rest", len(cfg.Warnings), cfg.Warnings[len(cfg.Warnings)-1], MaxProblems+1)
	}
}

func TestLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.hcl")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("got %v, want an error naming %s", err, path)
	}
	if err := os.WriteFile(path, []byte("image \"a\" {\n expected = 1\n}"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":2:") {
		t.Errorf("got %v, want an error at %s:2", err, path)
	}
}

func TestExampleConfigParses(t *testing.T) {
	t.Parallel()
	cfg, err := Load("../config.hcl.example")
	if err != nil {
		t.Fatalf("config.hcl.example: %v", err)
	}
	if len(cfg.Images) == 0 || len(cfg.Auths) == 0 {
		t.Errorf("got %d images and %d auths, want the example to show both", len(cfg.Images), len(cfg.Auths))
	}
}

// The README's config, the first a newcomer copies, loads as shown.
func TestREADMEConfigParses(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllSubmatch(b, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md shows no hcl config")
	}
	for i, m := range blocks {
		cfg, err := Parse(fmt.Sprintf("README.md hcl block %d", i+1), m[1])
		if err != nil {
			t.Errorf("%v", err)
		} else if len(cfg.Images) == 0 {
			t.Errorf("README.md hcl block %d: no image", i+1)
		}
	}
}

func TestAuthPassword(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PREFETCH_TEST_PW", "t0ken")
	t.Setenv("PREFETCH_TEST_EMPTY", "")
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		a    Auth
		want string
		err  string
	}{
		{Auth{Host: "h", PasswordFile: file}, "s3cret", ""},
		{Auth{Host: "h", PasswordEnv: "PREFETCH_TEST_PW"}, "t0ken", ""},
		{Auth{Host: "h", PasswordFile: filepath.Join(dir, "missing")}, "", `reading password_file of auth "h"`},
		{Auth{Host: "h", PasswordEnv: "PREFETCH_TEST_UNSET"}, "", `reading password_env of auth "h": environment variable PREFETCH_TEST_UNSET is not set`},
		{Auth{Host: "h", PasswordEnv: "PREFETCH_TEST_EMPTY"}, "", `reading password_env of auth "h": environment variable PREFETCH_TEST_EMPTY is empty`},
		{Auth{Host: "h", PasswordFile: empty}, "", `reading password_file of auth "h": ` + empty + ` is empty`},
	} {
		got, err := tc.a.Password()
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%+v: got %q, %v; want %q, %q", tc.a, got, err, tc.want, tc.err)
		}
	}
}

// TestCheckPasswords: validate's check that each auth block's password can
// be had here: a warning naming the block's position, the host and the
// file or variable for each that can't.
func TestCheckPasswords(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	if err := os.WriteFile(good, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	t.Setenv("PREFETCH_TEST_PW", "t0ken")
	t.Setenv("PREFETCH_TEST_EMPTY", "")
	auth := func(host, attr, value string) string {
		return fmt.Sprintf("auth %q {\n  username = \"u\"\n  %s = %q\n}\n", host, attr, value)
	}
	src := auth("a.example", "password_file", good) + auth("b.example", "password_file", missing) +
		auth("c.example", "password_env", "PREFETCH_TEST_PW") + auth("d.example", "password_env", "PREFETCH_TEST_UNSET") +
		auth("e.example", "password_env", "PREFETCH_TEST_EMPTY") + `image "a" { expected = "reg:5000/a:1" }`
	cfg, err := Parse("c.hcl", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	got := cfg.CheckPasswords()
	want := []string{
		`c.hcl:5:1: reading password_file of auth "b.example": open ` + missing + `: no such file or directory; pulls from b.example can't authenticate until prefetch can read it`,
		`c.hcl:13:1: reading password_env of auth "d.example": environment variable PREFETCH_TEST_UNSET is not set; pulls from d.example can't authenticate until it is set where prefetch runs`,
		`c.hcl:17:1: reading password_env of auth "e.example": environment variable PREFETCH_TEST_EMPTY is empty; pulls from e.example can't authenticate until it is set where prefetch runs`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d warnings %v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("warning %d:\ngot  %s\nwant %s", i, got[i], want[i])
		}
	}
}

// A source naming a tag and a digest is kept as repo@digest: the pull is by
// digest either way, and the tag would only make a reference Docker may not
// inspect.
func TestParseDigestedSourceDropsTag(t *testing.T) {
	t.Parallel()
	const d = "sha256:4f7e1e1e4b36b7f5f9d5b6f4b0a9c8e4b2a1d0c9f8e7d6c5b4a39281706f5e4d"
	cfg, err := Parse("c.hcl", []byte(`image "a" {
  expected = "reg:5000/a:1"
  sources  = ["ghcr.io/acme/a:1@`+d+`", "quay.io/acme/a@`+d+`"]
}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ghcr.io/acme/a@" + d, "quay.io/acme/a@" + d}
	if got := cfg.Images[0].Sources; !reflect.DeepEqual(got, want) {
		t.Errorf("got sources %q, want %q", got, want)
	}
}

// A small config whose value would take minutes to evaluate (nested for
// expressions, each multiplying the work) is refused before evaluation, at
// its line: the config may come from a KV store others write.
func TestExpensiveExpressionRefused(t *testing.T) {
	t.Parallel()
	list := `["a","b","c","d","e","f","g","h","i","j"]`
	expr := list
	for i := range 8 {
		expr = fmt.Sprintf(`[for x%d in %s : [for y%d in %s : y%d]]`, i, expr, i, list, i)
	}
	src := "image \"a\" {\n expected = \"a:1\"\n sources = " + expr + "\n}\n"
	_, err := Parse("c.hcl", []byte(src))
	if err == nil || !strings.Contains(err.Error(), "c.hcl:3:") || !strings.Contains(err.Error(), "only literal values") {
		t.Fatalf("%d-byte config of nested for expressions: got %v, want it refused at line 3", len(src), err)
	}
}
