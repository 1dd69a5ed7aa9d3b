package main

// The air-gapped bootstrap, end to end against the real test bed: prefetch
// bundle on a connected node, every registry stopped, the images removed,
// prefetch once -bundle; and the bundles that must be refused.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/agent"
	"github.com/nomad-prefetch/nomad-prefetch/bundle"
	"github.com/nomad-prefetch/nomad-prefetch/internal/tartest"
	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
)

// bundled is a bundle made by `prefetch bundle` from three images served by
// a registry, and what it holds.
type bundled struct {
	path, cfg string
	expected  []string          // in config order
	sources   []string          // the registry source of each
	ids       map[string]string // expected → image ID on the writer
}

// makeBundle seeds three images upstream, writes a config whose expected
// registry is down, and runs `prefetch bundle` (as the connected machine
// would). The upstream registry is stopped afterwards unless keep.
func makeBundle(t *testing.T, name string) bundled {
	t.Helper()
	testbed.Need(t, bed)
	ctx := context.Background()
	reg, proxy := startProxied(t, name)
	down := testbed.FreeAddr(t)
	b := bundled{path: filepath.Join(t.TempDir(), "bootstrap.tar"), ids: map[string]string{}}
	cfg := fmt.Sprintf("docker {\n  host = %q\n}\n", bed.Host)
	for i, img := range []string{"registry", "traefik", "minio"} {
		dgst, _, err := bed.Seed(ctx, reg.Addr+"/"+name+"-"+img+":1", name+"-"+img, 16<<10)
		if err != nil {
			t.Fatal(err)
		}
		exp := down + "/" + name + "-" + img + ":1"
		cfg += imageBlock(img, exp, proxy.Addr+"/"+name+"-"+img+":1")
		if i == 0 { // one pinned by digest: the manifest records it
			cfg = strings.TrimSuffix(cfg, "}\n") + fmt.Sprintf("  digest = %q\n}\n", dgst)
		}
		b.expected = append(b.expected, exp)
		b.sources = append(b.sources, proxy.Addr+"/"+name+"-"+img+":1")
	}
	b.cfg = writeFile(t, "config.hcl", cfg)
	code, stdout, stderr := runCLI(t, "bundle", "-config", b.cfg, "-o", b.path, "-log-format", "text")
	if code != exitOK {
		t.Fatalf("prefetch bundle: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"n=3 of=3", "msg=\"bundle written\"", "images=3"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("prefetch bundle's progress lacks %q:\n%s", want, stderr)
		}
	}
	if !strings.Contains(stdout, "bundle "+b.path+": 3 image(s), ") {
		t.Errorf("prefetch bundle's summary:\n%s", stdout)
	}
	for _, exp := range b.expected {
		b.ids[exp] = localImageID(t, exp)
	}
	reg.Stop() // its proxy stays, answering errors: the registry is gone
	return b
}

func localImageID(t *testing.T, ref string) string {
	t.Helper()
	im, err := bed.Client.ImageInspect(context.Background(), ref)
	if err != nil {
		return ""
	}
	return im.ID
}

// removeAll removes the bundle's images from the daemon, by ID, tags and
// all, as Nomad's image GC does.
// ociLayout reports whether the bundle's archive is a Docker 25+ save (an
// OCI layout, index.json at its root).
func (b bundled) ociLayout(t *testing.T) bool {
	t.Helper()
	f, err := os.Open(b.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Name == "index.json" {
			return true
		}
	}
}

func (b bundled) removeAll(t *testing.T) {
	t.Helper()
	for _, id := range b.ids {
		if err := bed.Remove(context.Background(), id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBundleAirGapped: a bundle of three images, every registry stopped,
// the images removed: `prefetch once -bundle` alone brings all three back
// with their original image IDs, and moves no tag already on the node.
func TestBundleAirGapped(t *testing.T) {
	b := makeBundle(t, "airgap")
	m, err := bundle.Read(b.path)
	if err != nil {
		t.Fatal(err)
	}
	kind := bundle.KindConfig // the classic store's IDs
	if testbed.ContainerdStore() {
		kind = bundle.KindManifest
	}
	for i, img := range m.Images {
		if img.Expected != b.expected[i] || img.ImageID != b.ids[img.Expected] || img.IDKind != kind {
			t.Errorf("manifest image %d: %+v, want %s as %s (%s digest)", i, img, b.expected[i], b.ids[b.expected[i]], kind)
		}
	}
	if m.Images[0].Digest == "" {
		t.Errorf("the digest-pinned image's entry records no digest: %+v", m.Images[0])
	}
	b.removeAll(t)
	// A tag already on the node, on other content: the load must leave it.
	// It is a name the image had on the writer (its source), which a save
	// by name would carry and a load would move.
	keep := b.sources[0]
	otherID, err := bed.Import(context.Background(), keep, "airgap-keep", 4<<10)
	if err != nil {
		t.Fatal(err)
	}

	t.Setenv("DOCKER_HOST", bed.Host)
	code, stdout, stderr := runCLI(t, "once", "-bundle", b.path)
	if code != exitOK {
		t.Fatalf("once -bundle: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, exp := range b.expected {
		if got := localImageID(t, exp); got != b.ids[exp] {
			t.Errorf("%s: image %q, want the original %s", exp, got, b.ids[exp])
		}
		if !hasLine(stdout, exp, "retagged from bundle:"+b.path) {
			t.Errorf("summary lacks %s retagged from the bundle:\n%s", exp, stdout)
		}
	}
	if got := localImageID(t, keep); got != otherID {
		t.Errorf("%s moved to %s, want it left on %s", keep, got, otherID)
	}
	if n := strings.Count(stderr, `"msg":"bundle loaded"`); n != 1 {
		t.Errorf("the bundle was loaded %d times for three images, want once:\n%s", n, stderr)
	}

	// Only the names asked for; with -config, the bundle is a last source
	// (the registries are down).
	if err := bed.Remove(context.Background(), b.ids[b.expected[1]]); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = runCLI(t, "once", "-config", b.cfg, "-bundle", b.path, "traefik")
	if code != exitOK || !hasLine(stdout, b.expected[1], "retagged from bundle:"+b.path) || strings.Contains(stdout, "minio") {
		t.Errorf("once -config -bundle traefik: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
}

// TestBundleRefused: a bundle whose manifest lies about an image ID, one
// that is truncated and one with a corrupt layer are refused, each with an
// error naming the file, and nothing of them is tagged.
func TestBundleRefused(t *testing.T) {
	b := makeBundle(t, "refused")
	b.removeAll(t)
	t.Setenv("DOCKER_HOST", bed.Host)
	dir := t.TempDir()
	fakeID := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("no such image")))
	a := b.ids[b.expected[0]]
	// A Docker 25+ save (an OCI layout) holds the config and the layers as
	// blobs, which the walk checks against their names.
	oci := b.ociLayout(t)
	ifOCI := func(yes, no string) string {
		if oci {
			return yes
		}
		return no
	}

	for _, tc := range []struct {
		name, want string
		edit       func(name string, data []byte) (string, []byte)
		cut        bool
	}{
		{
			name: "manifest names an image the archive lacks",
			want: "its manifest names images the archive does not hold",
			edit: func(name string, data []byte) (string, []byte) {
				if name == bundle.MemberName {
					data = bytes.ReplaceAll(data, []byte(a), []byte(fakeID))
				}
				return name, data
			},
		},
		{
			// The archive's config member renamed to the ID the manifest
			// claims: only the Engine's own ID, computed from the content,
			// tells.
			// Docker 25+ saves the config as blobs/sha256/<hex>, which the
			// walk finds not to hash to its new name before the Engine
			// sees a byte.
			name: "manifest and member names lie, the content does not",
			want: ifOCI("does not hash to its name", "the Engine loaded"),
			edit: func(name string, data []byte) (string, []byte) {
				old, lie := strings.TrimPrefix(a, "sha256:"), strings.TrimPrefix(fakeID, "sha256:")
				switch name {
				case bundle.MemberName, "manifest.json", "index.json":
					data = bytes.ReplaceAll(data, []byte(old), []byte(lie))
				case old + ".json":
					name = lie + ".json"
				case "blobs/sha256/" + old:
					name = "blobs/sha256/" + lie
				}
				return name, data
			},
		},
		{name: "truncated", want: "the file is truncated", cut: true},
		{
			// In a Docker 25+ save the layer is a blob, which the walk
			// finds not to hash to its name.
			name: "a corrupt layer",
			want: ifOCI("does not hash to its name", "the Docker Engine refused it: loading an archive: invalid diffID"),
			edit: func(name string, data []byte) (string, []byte) {
				layer := strings.HasSuffix(name, "/layer.tar") || strings.HasPrefix(name, "blobs/sha256/") && !bytes.HasPrefix(data, []byte("{"))
				if layer && len(data) > 2048 {
					data = bytes.Clone(data)
					data[1024] ^= 0xff // inside the file the layer holds
				}
				return name, data
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A failed case may leave the images loaded, untagged: with
			// their layers present, the Engine would not read a corrupt one.
			b.removeAll(t)
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".tar")
			if tc.cut {
				data, err := os.ReadFile(b.path)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, data[:len(data)/2], 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				rewrite(t, b.path, path, tc.edit)
			}
			// With the config: each image's error names the file and the
			// image.
			code, stdout, stderr := runCLI(t, "once", "-config", b.cfg, "-bundle", path)
			if code != exitFailed {
				t.Errorf("once -config -bundle: exit %d, want %d\nstdout: %s\nstderr: %s", code, exitFailed, stdout, stderr)
			}
			for _, exp := range b.expected {
				if want := "loading " + exp + " from bundle " + path + ": "; !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
				if got := localImageID(t, exp); got != "" {
					t.Errorf("%s is tagged (%s) from a refused bundle", exp, got)
				}
			}
			if !strings.Contains(stdout, tc.want) {
				t.Errorf("stdout lacks %q:\n%s", tc.want, stdout)
			}
			// Alone: refused as a whole.
			code, _, stderr = runCLI(t, "once", "-bundle", path)
			if code != exitFailed || !strings.Contains(stderr, path) {
				t.Errorf("once -bundle: exit %d, want %d naming %s\nstderr: %s", code, exitFailed, path, stderr)
			}
			for _, exp := range b.expected {
				if got := localImageID(t, exp); got != "" {
					t.Errorf("%s is tagged (%s) from a refused bundle", exp, got)
				}
			}
		})
	}
}

// hasLine reports whether a line of s holds every one of parts.
func hasLine(s string, parts ...string) bool {
	for line := range strings.Lines(s) {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// rewrite copies the archive src to dst, member by member, through edit.
func rewrite(t *testing.T, src, dst string, edit func(name string, data []byte) (string, []byte)) {
	t.Helper()
	archive, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, tartest.Rewrite(t, archive, edit), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBundleUsage: the command's flags and its refusals.
func TestBundleUsage(t *testing.T) {
	cfg := writeFile(t, "c.hcl", `image "a" { expected = "127.0.0.1:1/a:1" }`)
	runCLICases(t, []cliCase{
		{"help", []string{"bundle", "-h"}, exitOK, "Usage: prefetch bundle -config FILE -o FILE", ""},
		{"no -o", []string{"bundle", "-config", cfg}, exitUsage, "", "-o is required"},
		{"no config", []string{"bundle", "-o", "x.tar"}, exitUsage, "", "-config is required"},
		{"unknown name", []string{"bundle", "-config", cfg, "-o", "x.tar", "b"}, exitUsage, "", `no image "b" in the config`},
		{"once -bundle missing file", []string{"once", "-bundle", "/nonexistent/b.tar"}, exitFailed, "", "/nonexistent/b.tar"},
	})
}

// TestBundleNotWrittenWhenAnImageFails: no partial bundle.
func TestBundleNotWrittenWhenAnImageFails(t *testing.T) {
	testbed.Need(t, bed)
	down := testbed.FreeAddr(t)
	cfg := writeFile(t, "c.hcl", fmt.Sprintf("docker {\n  host = %q\n}\n", bed.Host)+imageBlock("gone", down+"/gone:1"))
	out := filepath.Join(t.TempDir(), "b.tar")
	code, stdout, stderr := runCLI(t, "bundle", "-config", cfg, "-o", out, "-json")
	var doc struct {
		OK     bool
		Bundle *struct{ Path string }
	}
	if err := json.Unmarshal([]byte(stdout), &doc); err != nil || code != exitFailed || doc.OK || doc.Bundle != nil {
		t.Errorf("got exit %d, %v, stdout %s\nstderr: %s", code, err, stdout, stderr)
	}
	if entries, _ := os.ReadDir(filepath.Dir(out)); len(entries) != 0 {
		t.Errorf("files left behind: %v", entries)
	}
}

// TestRunBundleSource: `prefetch run` with every registry down serves the
// images from a bundle source listed after a failing registry source,
// loading the bundle once for all of them, and again when Nomad's GC (here
// docker rmi) removes one.
func TestRunBundleSource(t *testing.T) {
	b := makeBundle(t, "runbundle")
	b.removeAll(t)
	dir := t.TempDir()
	cfg := daemonSettings()
	names := []string{"registry", "traefik", "minio"}
	for i, exp := range b.expected {
		cfg += imageBlock(names[i], exp, testbed.FreeAddr(t)+"/"+names[i]+":1", "bundle:"+b.path)
	}
	cfgPath := filepath.Join(dir, "config.hcl")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t, cfgPath, filepath.Join(dir, "prefetch.lock"))
	for i, name := range names {
		waitFor(t, name+" present", 60*time.Second, wantState(t, a, name, agent.StatePresent))
		if img, _ := a.image(t, name); img.Source != "bundle:"+b.path || img.ImageID != b.ids[b.expected[i]] {
			t.Errorf("%s: image %s from %q, want %s from the bundle", name, img.ImageID, img.Source, b.ids[b.expected[i]])
		}
	}
	loads := func() int { return strings.Count(a.stderr.String(), `"msg":"bundle loaded"`) }
	if n := loads(); n != 1 {
		t.Errorf("the bundle was loaded %d times for three images, want once", n)
	}

	if err := bed.Remove(context.Background(), b.ids[b.expected[1]]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "traefik restored from the bundle", 60*time.Second, func() bool {
		return localImageID(t, b.expected[1]) == b.ids[b.expected[1]]
	})
	if n := loads(); n != 2 {
		t.Errorf("after one image was removed, the bundle was loaded %d times in all, want twice", n)
	}
}
