package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestParseBundleSources: a bundle source is a file path, checked as one,
// each error at the list element that is wrong; valid ones are cleaned and
// kept in their place among the registry sources.
func TestParseBundleSources(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, sources, want string
	}{
		{"relative path", `["b:1", "bundle:boot/b.tar"]`, `c.hcl:3:20: image "a": source "bundle:boot/b.tar": path "boot/b.tar" is not absolute (want bundle:/absolute/path/bootstrap.tar)`},
		{"no path", `["bundle:"]`, `c.hcl:3:13: image "a": source "bundle:": names no file`},
		{"a directory", `["bundle:/boot/"]`, `c.hcl:3:13: image "a": source "bundle:/boot/": path "/boot/" names a directory`},
		{"listed twice", `["bundle:/boot/b.tar",` + "\n" + `  "bundle:/boot/./b.tar"]`, `c.hcl:4:3: image "a": source "bundle:/boot/./b.tar" is listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			src := "image \"a\" {\n expected = \"a:1\"\n sources = " + tc.sources + "\n}\n"
			_, err := Parse("c.hcl", []byte(src))
			var errs Errors
			if !errors.As(err, &errs) || len(errs) != 1 || !strings.HasPrefix(errs[0].String(), tc.want) {
				t.Errorf("got %v\nwant one problem starting %s", err, tc.want)
			}
		})
	}

	src := "image \"a\" {\n expected = \"reg:5000/a:1\"\n digest = \"sha256:" + strings.Repeat("ab", 32) + "\"\n sources = [\"b:1\", \"bundle:/boot//b.tar\", \"c:1\"]\n}\n"
	cfg, err := Parse("c.hcl", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"docker.io/library/b:1", "bundle:/boot/b.tar", "docker.io/library/c:1"}
	if got := cfg.Images[0].Sources; !slices.Equal(got, want) {
		t.Errorf("sources: got %q, want %q", got, want)
	}
	if p, ok := BundlePath(want[1]); !ok || p != "/boot/b.tar" {
		t.Errorf("BundlePath(%q) = %q, %v", want[1], p, ok)
	}
	if _, ok := BundlePath(want[0]); ok {
		t.Errorf("BundlePath(%q) says it is a bundle", want[0])
	}
}

// TestCheckBundles: validate warns about a bundle file it can't read, at
// the image block.
func TestCheckBundles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	here := filepath.Join(dir, "b.tar")
	if err := os.WriteFile(here, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "image \"a\" {\n expected = \"a:1\"\n sources = [\"bundle:" + here + "\"]\n}\nimage \"b\" {\n expected = \"b:1\"\n sources = [\"bundle:" + dir + "/gone.tar\", \"bundle:" + dir + "/x\"]\n}\n"
	if err := os.Mkdir(filepath.Join(dir, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("c.hcl", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	warns := cfg.CheckBundles()
	if len(warns) != 2 {
		t.Fatalf("got %v, want two warnings", warns)
	}
	for i, want := range []string{"c.hcl:5:1: image \"b\": bundle " + dir + "/gone.tar can't be read here (open ", "c.hcl:5:1: image \"b\": bundle " + dir + "/x can't be read here (not a regular file)"} {
		if !strings.HasPrefix(warns[i].String(), want) {
			t.Errorf("warning %d: got %s, want %s...", i, warns[i], want)
		}
	}
}
