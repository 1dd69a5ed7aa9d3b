package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunKeepsImagesOnBadRender: a render that would drop every image (an
// empty or truncated file) is a config error like any other: the agent
// reports it and keeps the images it has; a config that means to keep none
// says so with allow_empty. No Docker is needed: the agent lists the
// images of its config whether or not it can reach dockerd.
func TestRunKeepsImagesOnBadRender(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.hcl")
	settings := "docker {\n  host = \"unix:///nonexistent/docker.sock\"\n}\nretry_initial = \"1h\"\nretry_max = \"1h\"\n"
	good := settings + imageBlock("a", "127.0.0.1:1/a:1")
	// put renders as consul-template does: a temp file renamed over the config.
	put := func(content string) {
		t.Helper()
		tmp := filepath.Join(dir, ".config.hcl.tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfgPath); err != nil {
			t.Fatal(err)
		}
	}
	put(good)
	a := startAgent(t, cfgPath, filepath.Join(dir, "lock"))

	var many strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&many, "x%d = %q\n", i, strings.Repeat("v", 100))
	}
	many.WriteString(imageBlock("a", "127.0.0.1:1/a:1"))
	for _, tc := range []struct {
		name, content, want string
	}{
		{"a 0-byte render", "", cfgPath + ":1:1: no image blocks"},
		{"a render cut after its first line", "# Rendered by consul-template. Do not edit.\n", cfgPath + ":1:1: no image blocks"},
		{"a binary rendered into it", "\x7fELF\x02\x01\x01\x00" + strings.Repeat("\x00\xff\x10", 700), cfgPath + ":1:8: the file is not text"},
		{"a thousand problems", many.String(), "\nand 980 more"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			put(good)
			waitFor(t, "the good config loaded", 10*time.Second, func() bool { return a.status(t).ConfigError == "" })
			put(tc.content)
			waitFor(t, "the bad config reported", 10*time.Second, func() bool { return a.status(t).ConfigError != "" })
			s := a.status(t)
			if !strings.Contains(s.ConfigError, tc.want) || len(s.Images) != 1 {
				t.Errorf("got config error %.2000q and %d images; want %q and the last good config's one image", s.ConfigError, len(s.Images), tc.want)
			}
			// The agent logs the error as one line: it must stay short.
			for _, line := range strings.Split(a.stderr.String(), "\n") {
				if len(line) > 16<<10 {
					t.Errorf("a log line of %d bytes: %.300s...", len(line), line)
				}
			}
		})
	}

	put(settings + "allow_empty = true\n")
	waitFor(t, "the empty config loaded", 10*time.Second, func() bool {
		s := a.status(t)
		return s.ConfigError == "" && len(s.Images) == 0
	})
}
