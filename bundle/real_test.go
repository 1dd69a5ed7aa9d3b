package bundle

// Crafted bundles on the real dockerd (the test bed's private daemon, the
// classic image store): each variant of a bundle whose load would move a
// tag already on the node, or whose manifest claims a registry digest it
// does not prove, is refused before the Engine reads a byte of it, with an
// error naming the file and the member; the tag stays where it was.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/internal/testbed"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

var bed *testbed.Bed

func TestMain(m *testing.M) { os.Exit(testbed.Run(m, &bed)) }

// tarMember is one member of an archive being crafted.
type tarMember struct {
	hdr  tar.Header
	data []byte
}

func readMembers(t *testing.T, path string) []tarMember {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []tarMember
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tarMember{*hdr, data})
	}
}

func writeMembers(t *testing.T, path string, members []tarMember) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		hdr := m.hdr
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(m.data))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func regular(name string, data []byte) tarMember {
	return tarMember{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, data: data}
}

func symlink(name, target string) tarMember {
	return tarMember{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// moved returns members with name's content moved to a regular member to,
// and name made a link to it.
func moved(members []tarMember, name, to string, link func(name, target string) tarMember) []tarMember {
	var out []tarMember
	for _, m := range members {
		if m.hdr.Name == name {
			out = append(out, regular(to, m.data))
			m = link(name, to)
		}
		out = append(out, m)
	}
	return out
}

func hardlink(name, target string) tarMember {
	return tarMember{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644}}
}

func dir(name string) tarMember {
	return tarMember{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

// insertBefore puts extra just before the manifest's directory (so that
// the manifest stays last), after the Engine's members.
func insertBefore(members []tarMember, extra ...tarMember) []tarMember {
	i := slices.IndexFunc(members, func(m tarMember) bool { return m.hdr.Name == "prefetch/" })
	return slices.Insert(slices.Clone(members), i, extra...)
}

// realBundle is a bundle of one image written by the real daemon, the
// image removed again, and a victim: another image tagged as a name a
// crafted bundle tries to move.
type realBundle struct {
	eng       *registry.Engine
	path      string
	expected  string
	id        string
	victim    string // a tag already on the node
	victimID  string
	members   []tarMember
	manifestJ []dockerItem // the Engine's manifest.json
}

// engine is a registry.Engine on the test bed's dockerd, closed when t ends.
func engine(t *testing.T) *registry.Engine {
	t.Helper()
	e, err := registry.NewEngine(registry.Options{Host: bed.Host})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func newRealBundle(t *testing.T, name string) *realBundle {
	t.Helper()
	testbed.Need(t, bed)
	ctx := context.Background()
	eng := engine(t)
	var err error
	b := &realBundle{eng: eng, path: filepath.Join(t.TempDir(), "good.tar"), expected: "127.0.0.1:1/" + name + ":1", victim: "127.0.0.1:1/" + name + "-victim:1"}
	if b.id, err = bed.Import(ctx, "127.0.0.1:1/"+name+"-src:1", name, 8<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(ctx, eng, b.path, []Entry{{Name: name, Expected: b.expected, ImageID: b.id}}, WriteOptions{Log: quiet}); err != nil {
		t.Fatal(err)
	}
	if err := bed.Remove(ctx, b.id); err != nil {
		t.Fatal(err)
	}
	if b.victimID, err = bed.Import(ctx, b.victim, name+"-victim", 4<<10); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Remove(context.Background(), b.id, b.victimID) })
	b.members = readMembers(t, b.path)
	for _, m := range b.members {
		if m.hdr.Name == dockerManifestName {
			if err := json.Unmarshal(m.data, &b.manifestJ); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(b.manifestJ) != 1 {
		t.Fatalf("the Engine's manifest.json: %+v, want one image", b.manifestJ)
	}
	return b
}

// taggingManifest is a manifest.json for the bundle's image that tags it
// as the victim.
func (b *realBundle) taggingManifest() []byte {
	items := slices.Clone(b.manifestJ)
	items[0].RepoTags = []string{b.victim}
	data, _ := json.Marshal(items)
	return data
}

// craft writes members as a bundle beside the good one.
func (b *realBundle) craft(t *testing.T, name string, members []tarMember) string {
	t.Helper()
	path := filepath.Join(filepath.Dir(b.path), name+".tar")
	writeMembers(t, path, members)
	return path
}

// victimStays fails t if the victim's tag moved, and puts it back.
func (b *realBundle) victimStays(t *testing.T) {
	t.Helper()
	im, err := bed.Client.ImageInspect(context.Background(), b.victim)
	if err != nil || im.ID != b.victimID {
		t.Errorf("%s: %q %v, want it left on %s", b.victim, im.ID, err, b.victimID)
		if err := b.eng.Tag(context.Background(), b.victimID, b.victim); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRealLoadsGood: the bundle as written loads on the real daemon, so
// that what the crafted variants change is all that makes them refused.
func TestRealLoadsGood(t *testing.T) {
	t.Parallel()
	b := newRealBundle(t, "good")
	l := NewLoader(b.eng, quiet)
	id, err := l.Image(context.Background(), b.path, b.expected, "", registry.ArchiveOptions{})
	if err != nil || id != b.id {
		t.Fatalf("got %q %v, want %s", id, err, b.id)
	}
	b.victimStays(t)
}

// TestRealRefusesNames: a member whose name the Engine extracts as a
// metadata member other than the one prefetch vetted (an absolute name, a
// name through a symlinked directory, a name climbing out with ..), a
// metadata name below the root, a symlink or hard link other than the
// layer links docker save writes: each refused before the load, naming
// the file and the member, and no tag moves.
func TestRealRefusesNames(t *testing.T) {
	t.Parallel()
	b := newRealBundle(t, "names")
	cfg := b.manifestJ[0].Config
	layer := b.manifestJ[0].Layers[0]
	for _, tc := range []struct {
		name    string
		extra   []tarMember
		members func() []tarMember // instead of extra
		member  string             // the member the error must name
		want    string
	}{
		{
			name:   "absolute manifest.json",
			extra:  []tarMember{regular("/manifest.json", b.taggingManifest())},
			member: "/manifest.json", want: "absolute",
		},
		{
			name:   "manifest.json through a symlinked directory",
			extra:  []tarMember{symlink("x", "."), regular("x/manifest.json", b.taggingManifest())},
			member: `"x"`, want: "symlink",
		},
		{
			name:   "manifest.json climbing out",
			extra:  []tarMember{dir("y/"), regular("../manifest.json", b.taggingManifest())},
			member: "../manifest.json", want: "..",
		},
		{
			name:   "manifest.json below the root",
			extra:  []tarMember{dir("sub/"), regular("sub/manifest.json", b.taggingManifest())},
			member: "sub/manifest.json", want: "only at the archive's root",
		},
		{
			name:   "repositories as a symlink",
			extra:  []tarMember{regular("r.json", []byte(`{"x":{"1":"y"}}`)), symlink("repositories", "r.json")},
			member: "repositories", want: "symlink",
		},
		{
			name:   "a symlink out of the archive",
			extra:  []tarMember{symlink("passwd", "/etc/passwd")},
			member: "passwd", want: "symlink",
		},
		{
			name:    "the layer as a hard link",
			members: func() []tarMember { return moved(b.members, layer, "l.tar", hardlink) },
			member:  layer, want: "hard link",
		},
		{
			name:    "the config as a symlink",
			members: func() []tarMember { return moved(b.members, cfg, "c.json", symlink) },
			member:  cfg, want: "symlink",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			members := insertBefore(b.members, tc.extra...)
			if tc.members != nil {
				members = tc.members()
			}
			path := b.craft(t, strings.ReplaceAll(tc.name, " ", "-"), members)
			l := NewLoader(b.eng, quiet)
			id, err := l.Image(context.Background(), path, b.expected, "", registry.ArchiveOptions{})
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.member) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %q %v, want an error naming %s and member %s, saying %q", id, err, path, tc.member, tc.want)
			}
			if n := l.Loads(path); n != 0 {
				t.Errorf("the Engine loaded it %d times, want it refused before", n)
			}
			b.victimStays(t)
			_ = bed.Remove(context.Background(), b.id)
		})
	}
}

// TestRealLayerLinks: the layer links docker save writes load, and are
// accepted: Docker 20.10's <id>/layer.tar → ../<id>/layer.tar for a layer
// already saved, and the legacy <id>/layer.tar → ../blobs/sha256/<hex> of
// an OCI-layout save.
func TestRealLayerLinks(t *testing.T) {
	t.Parallel()
	b := newRealBundle(t, "links")
	layer := b.manifestJ[0].Layers[0]
	var layerData []byte
	for _, m := range b.members {
		if m.hdr.Name == layer {
			layerData = m.data
		}
	}
	other := strings.Repeat("e", 64)
	diff := strings.TrimPrefix(sha(layerData), "sha256:")
	for _, tc := range []struct {
		name   string
		target string
		extra  []tarMember
	}{
		{"to another layer", "../" + layer, []tarMember{dir(other + "/")}},
		{"to a blob", "../blobs/sha256/" + diff, []tarMember{dir(other + "/"), dir("blobs/"), dir("blobs/sha256/"), regular("blobs/sha256/"+diff, layerData)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			items := slices.Clone(b.manifestJ)
			items[0].Layers = []string{other + "/layer.tar"}
			mj, _ := json.Marshal(items)
			var members []tarMember
			for _, m := range b.members {
				if m.hdr.Name == dockerManifestName {
					m.data = mj
				}
				members = append(members, m)
			}
			// A save in the OCI layout (Docker 25+, either image store)
			// already holds blobs/ and the layer's blob: add only what
			// it lacks, as a member twice over is refused.
			var extra []tarMember
			for _, m := range tc.extra {
				if !slices.ContainsFunc(members, func(have tarMember) bool { return have.hdr.Name == m.hdr.Name }) {
					extra = append(extra, m)
				}
			}
			extra = append(extra, symlink(other+"/layer.tar", tc.target))
			path := b.craft(t, strings.ReplaceAll(tc.name, " ", "-"), insertBefore(members, extra...))
			l := NewLoader(b.eng, quiet)
			id, err := l.Image(context.Background(), path, b.expected, "", registry.ArchiveOptions{})
			if err != nil || id != b.id {
				t.Errorf("got %q %v, want %s", id, err, b.id)
			}
			b.victimStays(t)
			_ = bed.Remove(context.Background(), b.id)
		})
	}
}

// TestRealSharedLayer: the real daemon's save of two images sharing a
// layer writes the second as a layer link (Docker 20.10:
// <id>/layer.tar -> ../<id>/layer.tar), or, in the OCI layout of Docker
// 25+ (either image store), no link at all: both images name the one
// blobs/sha256/<digest> member; the writer and the reader accept it, and
// the bundle serves both images.
func TestRealSharedLayer(t *testing.T) {
	t.Parallel()
	testbed.Need(t, bed)
	ctx := context.Background()
	eng := engine(t)
	var entries []Entry
	for _, n := range []string{"one", "two"} {
		id, err := bed.Import(ctx, "127.0.0.1:1/shared-"+n+"-src:1", "shared", 8<<10)
		if err != nil {
			t.Fatal(err)
		}
		entries = append(entries, Entry{Expected: "127.0.0.1:1/shared-" + n + ":1", ImageID: id})
	}
	if entries[0].ImageID == entries[1].ImageID {
		t.Fatalf("the two imports are one image %s", entries[0].ImageID)
	}
	path := filepath.Join(t.TempDir(), "shared.tar")
	if _, err := Write(ctx, eng, path, entries, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var links []string
	var items []dockerItem
	names := map[string]int{}
	for _, m := range readMembers(t, path) {
		names[m.hdr.Name]++
		if m.hdr.Typeflag == tar.TypeSymlink {
			links = append(links, m.hdr.Name+" -> "+m.hdr.Linkname)
		}
		if m.hdr.Name == dockerManifestName {
			if err := json.Unmarshal(m.data, &items); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("the daemon's save links %q", links)
	if len(items) != 2 || len(items[0].Layers) != 1 || len(items[1].Layers) != 1 {
		t.Fatalf("manifest.json of the daemon's save: %+v, want two images of one layer each", items)
	}
	shared := items[0].Layers[0] == items[1].Layers[0]
	switch {
	case len(links) == 1 && !shared: // Docker 20.10: the second image's layer a link to the first's
	case len(links) == 0 && shared && strings.HasPrefix(items[0].Layers[0], "blobs/sha256/") && names[items[0].Layers[0]] == 1: // the OCI layout: one blob for both
	default:
		t.Errorf("layer links in the daemon's save: %q, layers %q and %q; want one link, or none and one blob named by both", links, items[0].Layers, items[1].Layers)
	}
	if err := bed.Remove(ctx, entries[0].ImageID, entries[1].ImageID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Remove(context.Background(), entries[0].ImageID, entries[1].ImageID) })
	l := NewLoader(eng, quiet)
	for _, e := range entries {
		if id, err := l.Image(ctx, path, e.Expected, "", registry.ArchiveOptions{}); err != nil || id != e.ImageID {
			t.Errorf("%s: got %q %v, want %s", e.Expected, id, err, e.ImageID)
		}
	}
}
