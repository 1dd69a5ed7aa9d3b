package bundle

// Tests of the format, the writer and the loader with a fake Engine that
// saves and loads archives as a classic-store daemon does (an image's ID is
// its config's digest). The real daemon is in cmd/prefetch's tests.

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

func sha(data []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(data)) }

// member is one archive member.
type member struct {
	name string
	data []byte
}

func tarOf(t *testing.T, members ...member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// fakeEngine keeps images by ID, saves them in Docker 20.10's format and
// loads such archives, reporting the config digests as a classic daemon
// does.
type fakeEngine struct {
	mu      sync.Mutex
	configs map[string][]byte // ID → config
	loads   int
	loadErr error
	extra   []member // added to every save
	altered bool     // Load loads each config with a byte more: other IDs
	stowed  []byte   // a config Load loads too, beyond the archive's
	removed []string // what Remove removed
}

func newFakeEngine(configs ...string) (*fakeEngine, []string) {
	e := &fakeEngine{configs: map[string][]byte{}}
	var ids []string
	for _, c := range configs {
		id := sha([]byte(c))
		e.configs[id] = []byte(c)
		ids = append(ids, id)
	}
	return e, ids
}

func (e *fakeEngine) Save(_ context.Context, ids []string, _ registry.ArchiveOptions) (io.ReadCloser, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var members []member
	var items []dockerItem
	for _, id := range ids {
		h := hexOf(id)
		members = append(members, member{h + ".json", e.configs[id]}, member{h[:8] + "/layer.tar", bytes.Repeat([]byte{1}, 4096)})
		items = append(items, dockerItem{Config: h + ".json", Layers: []string{h[:8] + "/layer.tar"}})
	}
	mj, _ := json.Marshal(items)
	members = append(members, member{"manifest.json", mj})
	members = append(members, e.extra...)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		_ = tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg})
		_, _ = tw.Write(m.data)
	}
	_ = tw.Close()
	return io.NopCloser(&buf), nil
}

func (e *fakeEngine) Load(_ context.Context, archive io.Reader, _ registry.ArchiveOptions, _ func(int64)) (registry.LoadResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.loads++
	if e.loadErr != nil {
		return registry.LoadResult{}, e.loadErr
	}
	files := map[string][]byte{}
	tr := tar.NewReader(archive)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return registry.LoadResult{}, err
		}
		files[hdr.Name], _ = io.ReadAll(tr)
	}
	var items []dockerItem
	if err := json.Unmarshal(files["manifest.json"], &items); err != nil {
		return registry.LoadResult{}, err
	}
	var res registry.LoadResult
	for _, it := range items {
		config := files[it.Config]
		if e.altered {
			config = append(config, ' ')
		}
		id := sha(config)
		e.configs[id] = config
		res.IDs = append(res.IDs, id)
	}
	if e.stowed != nil {
		e.configs[sha(e.stowed)] = e.stowed
		res.IDs = append(res.IDs, sha(e.stowed))
	}
	return res, nil
}

func (e *fakeEngine) ImageIDs(context.Context) (map[string]bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := map[string]bool{}
	for id := range e.configs {
		ids[id] = true
	}
	return ids, nil
}

func (e *fakeEngine) Remove(_ context.Context, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.configs, id)
	e.removed = append(e.removed, id)
	return nil
}

func (e *fakeEngine) Inspect(_ context.Context, ref string) (registry.Image, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.configs[ref]; !ok {
		return registry.Image{}, fmt.Errorf("inspecting %s: %w", ref, registry.ErrNotFound)
	}
	return registry.Image{ID: ref}, nil
}

func (e *fakeEngine) remove(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.configs, id)
}

func (e *fakeEngine) loadCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.loads
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// writeTwo writes a bundle of two images and returns its path and their IDs.
func writeTwo(t *testing.T) (*fakeEngine, string, []string) {
	t.Helper()
	e, ids := newFakeEngine(`{"a":1}`, `{"b":2}`)
	path := filepath.Join(t.TempDir(), "b.tar")
	entries := []Entry{
		{Name: "a", Expected: "reg:5000/a:1", ImageID: ids[0], Digest: "sha256:" + strings.Repeat("d", 64)},
		{Name: "b", Expected: "reg:5000/b:1", ImageID: ids[1]},
	}
	w, err := Write(context.Background(), e, path, entries, WriteOptions{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != w.Bytes {
		t.Fatalf("bundle on disk: %v, %d bytes written", err, w.Bytes)
	}
	return e, path, ids
}

// TestWriteRead: the bundle is the Engine's save with the manifest last,
// and Read gives back what was written.
func TestWriteRead(t *testing.T) {
	t.Parallel()
	_, path, ids := writeTwo(t)
	m, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	want := []Image{
		{Name: "a", Expected: "reg:5000/a:1", ImageID: ids[0], IDKind: KindConfig, ConfigDigest: ids[0], Digest: "sha256:" + strings.Repeat("d", 64)},
		{Name: "b", Expected: "reg:5000/b:1", ImageID: ids[1], IDKind: KindConfig, ConfigDigest: ids[1]},
	}
	if !slices.Equal(m.Images, want) {
		t.Errorf("manifest images:\ngot  %+v\nwant %+v", m.Images, want)
	}
	data, _ := os.ReadFile(path)
	var names []string
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		names = append(names, hdr.Name)
	}
	if len(names) < 2 || names[len(names)-1] != MemberName || names[len(names)-2] != "prefetch/" {
		t.Errorf("members %v: want prefetch/ and %s last", names, MemberName)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("files beside the bundle: %v, want none left", entries)
	}
}

// TestWriteRefusesTags: an archive that would tag something on load is not
// written (whatever the Engine did), and nothing is left behind.
func TestWriteRefusesTags(t *testing.T) {
	t.Parallel()
	e, ids := newFakeEngine(`{"a":1}`)
	e.extra = []member{{"repositories", []byte(`{"reg:5000/a":{"1":"x"}}`)}}
	dir := t.TempDir()
	_, err := Write(context.Background(), e, filepath.Join(dir, "b.tar"), []Entry{{Expected: "reg:5000/a:1", ImageID: ids[0]}}, WriteOptions{})
	if err == nil || !strings.Contains(err.Error(), "loading it would tag") {
		t.Errorf("got %v, want a refusal", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
}

// TestReadRefuses: what Read refuses, each saying why.
func TestReadRefuses(t *testing.T) {
	t.Parallel()
	_, path, ids := writeTwo(t)
	good, _ := os.ReadFile(path)
	cfgA := hexOf(ids[0]) + ".json"
	manifest := func(images ...Image) member {
		data, _ := json.Marshal(Manifest{Version: Version, Images: images})
		return member{MemberName, data}
	}
	img := Image{Expected: "reg:5000/a:1", ImageID: ids[0], IDKind: KindConfig}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated", good[:len(good)/2], "the file is truncated"},
		{"empty", nil, "has no " + MemberName},
		{"not a tar", bytes.Repeat([]byte("x"), 2048), "the file is corrupt"},
		{"no manifest", tarOf(t, member{cfgA, []byte(`{"a":1}`)}), "has no " + MemberName},
		{"RepoTags", tarOf(t, member{"manifest.json", []byte(`[{"Config":"` + cfgA + `","RepoTags":["reg:5000/a:1"]}]`)}, manifest(img)), "loading it would tag reg:5000/a:1"},
		{"index names", tarOf(t, member{"index.json", []byte(`{"manifests":[{"digest":"` + ids[0] + `","annotations":{"io.containerd.image.name":"x:1"}}]}`)}, manifest(img)), "loading it would tag x:1"},
		{"image not held", tarOf(t, manifest(img)), "names images the archive does not hold"},
		{"member twice", tarOf(t, member{cfgA, nil}, member{cfgA, nil}, manifest(img)), "appears twice"},
		{"bad version", tarOf(t, member{cfgA, nil}, member{MemberName, []byte(`{"version":9}`)}), "has version 9"},
		{"expected not normalised", tarOf(t, member{cfgA, nil}, manifest(Image{Expected: "a:1", ImageID: ids[0], IDKind: KindConfig})), "not a normalised"},
		{"listed twice", tarOf(t, member{cfgA, nil}, manifest(img, img)), "listed twice"},
		{"bad kind", tarOf(t, member{cfgA, nil}, manifest(Image{Expected: img.Expected, ImageID: ids[0], IDKind: "id"})), `image_id_kind "id"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "x.tar")
			if err := os.WriteFile(p, tc.data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Read(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("got %v, want an error naming %s with %q", err, p, tc.want)
			}
		})
	}
}

// TestIdentifyOCI: in an OCI-layout save (Docker 25+), an image whose ID
// is an index.json entry (the containerd store) is of the manifest kind,
// with its config digest found through its manifest, or through the one
// image manifest of its index that the archive holds.
func TestIdentifyOCI(t *testing.T) {
	t.Parallel()
	cfg := sha([]byte("config"))
	mf := []byte(`{"config":{"digest":"` + cfg + `"},"layers":[]}`)
	att := []byte(`{"config":{"digest":"` + sha([]byte("att")) + `"},"layers":[]}`)
	idx := []byte(`{"manifests":[{"digest":"` + sha(mf) + `","platform":{"os":"linux"}},{"digest":"` + sha(att) + `","platform":{"os":"unknown"}},{"digest":"` + sha([]byte("absent")) + `","platform":{"os":"linux"}}]}`)
	for _, tc := range []struct {
		name, id string
	}{{"manifest", sha(mf)}, {"index", sha(idx)}} {
		fs := newFacts()
		for _, b := range [][]byte{mf, att, idx} {
			if err := fs.add(&tar.Header{Typeflag: tar.TypeReg, Name: "blobs/sha256/" + hexOf(sha(b)), Size: int64(len(b))}, b); err != nil {
				t.Fatal(err)
			}
		}
		fs.index = &ociIndex{Manifests: []ociDescriptor{{Digest: tc.id}}}
		kind, config, err := fs.identify(tc.id)
		if err != nil || kind != KindManifest || config != cfg {
			t.Errorf("%s: got %q %q %v, want %q %q", tc.name, kind, config, err, KindManifest, cfg)
		}
	}
	if _, _, err := newFacts().identify(cfg); err == nil {
		t.Error("identify of an image the archive lacks: no error")
	}
}

// TestVerify: each image gets the ID the Engine loaded among its own: the
// writer's ID, or its config digest (a classic-store node loading a
// containerd-store bundle); anything else refuses the whole bundle.
func TestVerify(t *testing.T) {
	t.Parallel()
	m := &Manifest{Images: []Image{
		{Expected: "r/a:1", ImageID: "sha256:aa", IDKind: KindManifest, ConfigDigest: "sha256:ac"},
		{Expected: "r/b:1", ImageID: "sha256:bb", IDKind: KindConfig, ConfigDigest: "sha256:bb"},
	}}
	got, err := verify(m, registry.LoadResult{IDs: []string{"sha256:ac", "sha256:bb"}})
	if err != nil || got["r/a:1"] != "sha256:ac" || got["r/b:1"] != "sha256:bb" {
		t.Errorf("got %v %v", got, err)
	}
	got, err = verify(m, registry.LoadResult{IDs: []string{"sha256:aa", "sha256:bb"}})
	if err != nil || got["r/a:1"] != "sha256:aa" {
		t.Errorf("got %v %v", got, err)
	}
	if _, err := verify(m, registry.LoadResult{IDs: []string{"sha256:aa", "sha256:cc"}}); err == nil || !strings.Contains(err.Error(), "r/b:1: the manifest names sha256:bb") {
		t.Errorf("a lying manifest: got %v", err)
	}
	if _, err := verify(m, registry.LoadResult{IDs: []string{"sha256:aa", "sha256:bb"}, Names: []string{"x:1"}}); err == nil {
		t.Error("a load that tagged: no error")
	}
}

// TestLoaderOncePerFile: however many images, and however concurrently,
// a bundle is loaded once while its file and its images stay; again when
// an image it served was removed, or when the file changes.
func TestLoaderOncePerFile(t *testing.T) {
	t.Parallel()
	e, path, ids := writeTwo(t)
	for _, id := range ids {
		e.remove(id)
	}
	l := NewLoader(e, quiet)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 8 {
		for i, exp := range []string{"reg:5000/a:1", "reg:5000/b:1"} {
			wg.Go(func() {
				id, err := l.Image(ctx, path, exp, "", registry.ArchiveOptions{})
				if err != nil || id != ids[i] {
					t.Errorf("%s: got %q %v, want %s", exp, id, err, ids[i])
				}
			})
		}
	}
	wg.Wait()
	if n := e.loadCount(); n != 1 || l.Loads(path) != 1 {
		t.Errorf("16 requests: %d loads (loader says %d), want 1", n, l.Loads(path))
	}

	e.remove(ids[1]) // Nomad's GC
	if id, err := l.Image(ctx, path, "reg:5000/b:1", "", registry.ArchiveOptions{}); err != nil || id != ids[1] {
		t.Fatalf("after removal: %q %v", id, err)
	}
	if n := e.loadCount(); n != 2 {
		t.Errorf("after a removal: %d loads, want 2", n)
	}

	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Image(ctx, path, "reg:5000/a:1", "", registry.ArchiveOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := e.loadCount(); n != 3 {
		t.Errorf("after the file changed: %d loads, want 3", n)
	}
}

// TestLoaderErrors: what the Loader refuses, and which failures it
// remembers (the file's) or not (the daemon's).
func TestLoaderErrors(t *testing.T) {
	t.Parallel()
	e, path, _ := writeTwo(t)
	l := NewLoader(e, quiet)
	ctx := context.Background()
	opts := registry.ArchiveOptions{}
	if _, err := l.Image(ctx, path, "reg:5000/c:1", "", opts); err == nil || !strings.Contains(err.Error(), "loading reg:5000/c:1 from bundle "+path+": the bundle holds no image for it (it holds reg:5000/a:1, reg:5000/b:1)") {
		t.Errorf("an image it lacks: %v", err)
	}
	if _, err := l.Image(ctx, path, "reg:5000/b:1", "sha256:"+strings.Repeat("e", 64), opts); err == nil || !strings.Contains(err.Error(), "the bundle records no digest") {
		t.Errorf("a digest pin it can't meet: %v", err)
	}
	// The manifest records the pin, and that is all: the archive holds no
	// blob of it (see TestRealDigestPin and TestProveDigest for proofs).
	var unprovenErr *UnprovenError
	if id, err := l.Image(ctx, path, "reg:5000/a:1", "sha256:"+strings.Repeat("d", 64), opts); !errors.As(err, &unprovenErr) || !strings.Contains(err.Error(), "the pin is unproven: the archive holds no blob sha256:ddd") {
		t.Errorf("a digest pin it only claims: %q %v", id, err)
	}
	if n := e.loadCount(); n != 0 {
		t.Errorf("loads: %d, want none for pins it can't meet", n)
	}

	e2, path2, ids2 := writeTwo(t)
	for _, id := range ids2 {
		e2.remove(id)
	}
	l2 := NewLoader(e2, quiet)
	e2.loadErr = &registry.DaemonTimeoutError{Host: "unix:///x", Op: "a load", After: time.Second}
	if _, err := l2.Image(ctx, path2, "reg:5000/a:1", "", opts); err == nil {
		t.Fatal("no error from a hung daemon")
	}
	e2.loadErr = errors.New("invalid diffID for layer 0")
	for range 3 {
		if _, err := l2.Image(ctx, path2, "reg:5000/a:1", "", opts); err == nil || !strings.Contains(err.Error(), "the Docker Engine refused it: invalid diffID") {
			t.Errorf("a refused load: %v", err)
		}
	}
	if n := e2.loadCount(); n != 2 {
		t.Errorf("loads: %d, want 2 (the daemon's failure retried, the file's remembered)", n)
	}
	l2.now = func() time.Time { return time.Now().Add(RetryFailedLoad + time.Second) }
	e2.loadErr = nil
	if _, err := l2.Image(ctx, path2, "reg:5000/a:1", "", opts); err != nil {
		t.Errorf("after RetryFailedLoad: %v", err)
	}
}

// TestLoaderDiscards: the images a refused load added leave Docker again;
// one that was there before the load stays.
func TestLoaderDiscards(t *testing.T) {
	t.Parallel()
	e, path, ids := writeTwo(t)
	for _, id := range ids {
		e.remove(id)
	}
	e.altered = true // the Engine loads other images than the manifest names
	before := sha(append([]byte(`{"a":1}`), ' '))
	e.configs[before] = []byte(`{"a":1} `) // one of them is there already
	after := sha(append([]byte(`{"b":2}`), ' '))
	l := NewLoader(e, quiet)
	if _, err := l.Image(context.Background(), path, "reg:5000/a:1", "", registry.ArchiveOptions{}); err == nil || !strings.Contains(err.Error(), "not what the bundle's manifest names") {
		t.Fatalf("a bundle that loads other images: %v", err)
	}
	if !slices.Equal(e.removed, []string{after}) {
		t.Errorf("removed %v, want only %s (the one the load added)", e.removed, after)
	}
	if _, err := e.Inspect(context.Background(), before); err != nil {
		t.Errorf("the image there before the load: %v", err)
	}

	// An image stowed in a bundle beside the ones its manifest names is
	// loaded by the Engine, and removed again.
	e3, path3, ids3 := writeTwo(t)
	e3.stowed = []byte(`{"stowed":1}`)
	e3.remove(ids3[0])
	l3 := NewLoader(e3, quiet)
	if id, err := l3.Image(context.Background(), path3, "reg:5000/a:1", "", registry.ArchiveOptions{}); err != nil || id != ids3[0] {
		t.Fatalf("a bundle with a stowed image: %q %v", id, err)
	}
	if !slices.Equal(e3.removed, []string{sha(e3.stowed)}) {
		t.Errorf("a stowed image: removed %v, want %s", e3.removed, sha(e3.stowed))
	}
}

// TestProveDigest: what a pinned digest's blob proves: itself, a
// manifest's config, and through an index each manifest the archive holds
// (hashing to its name), never a manifest it lacks or one of another
// content.
func TestProveDigest(t *testing.T) {
	t.Parallel()
	cfg := sha([]byte("config"))
	mf := []byte(`{"config":{"digest":"` + cfg + `"},"layers":[]}`)
	absent := sha([]byte("absent"))
	idx := []byte(`{"manifests":[{"digest":"` + sha(mf) + `"},{"digest":"` + absent + `"}]}`)
	blob := func(name string, data []byte) member { return member{"blobs/sha256/" + hexOf(name), data} }
	for _, tc := range []struct {
		name    string
		members []member
		dgst    string
		want    []string
		err     string
	}{
		{"a manifest", []member{blob(sha(mf), mf)}, sha(mf), []string{sha(mf), cfg}, ""},
		{"an index", []member{blob(sha(mf), mf), blob(sha(idx), idx)}, sha(idx), []string{sha(idx), sha(mf), cfg}, ""},
		{"an index without its manifest", []member{blob(sha(idx), idx)}, sha(idx), []string{sha(idx)}, ""},
		{"no blob", []member{blob(sha(mf), mf)}, sha(idx), nil, "holds no blob " + sha(idx)},
		{"a blob of other content", []member{blob(sha(mf), idx)}, sha(mf), nil, "does not hash to its name"},
		{"an index's manifest of other content", []member{blob(sha(mf), idx), blob(sha(idx), idx)}, sha(idx), nil, "does not hash to its name"},
		{"not sha256", nil, "sha512:" + strings.Repeat("a", 128), nil, "not a sha256 digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "x.tar")
			if err := os.WriteFile(p, tarOf(t, tc.members...), 0o644); err != nil {
				t.Fatal(err)
			}
			// From the file, and from the blobs a streamed pass keeps.
			kept := newFacts()
			for _, m := range tc.members {
				if err := kept.add(&tar.Header{Typeflag: tar.TypeReg, Name: m.name, Size: int64(len(m.data))}, m.data); err != nil {
					t.Fatal(err)
				}
			}
			for how, prove := range map[string]func() ([]string, error){
				"file":   func() ([]string, error) { return proveDigest(p, tc.dgst) },
				"stream": func() ([]string, error) { return prove(tc.dgst, kept.keptBlobs) },
			} {
				got, err := prove()
				if tc.err != "" {
					if err == nil || !strings.Contains(err.Error(), tc.err) {
						t.Errorf("%s: got %v %v, want an error with %q", how, got, err, tc.err)
					}
					continue
				}
				if err != nil || !slices.Equal(got, tc.want) {
					t.Errorf("%s: got %v %v, want %v", how, got, err, tc.want)
				}
			}
		})
	}
}

// TestReadRefusesMembers: the member rules beyond those the real daemon
// shows (TestRealRefusesNames): a layer link must point at a regular
// member, nothing may lie below a link, a metadata name is a regular file,
// a name spelt two ways is one member, and no other member type passes.
func TestReadRefusesMembers(t *testing.T) {
	t.Parallel()
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	cfg := strings.Repeat("c", 64)
	manifest, _ := json.Marshal(Manifest{Version: Version, Images: []Image{{Expected: "reg:5000/a:1", ImageID: "sha256:" + cfg, IDKind: KindConfig}}})
	base := []tarMember{regular(cfg+".json", []byte(`{}`)), dir(a + "/"), regular(a+"/layer.tar", []byte("layer"))}
	end := []tarMember{dir("prefetch/"), regular(MemberName, manifest)}
	for _, tc := range []struct {
		name    string
		members []tarMember
		want    string // "" for accepted
	}{
		{"a layer link to a layer", []tarMember{dir(b + "/"), symlink(b+"/layer.tar", "../"+a+"/layer.tar")}, ""},
		{"a layer link to nothing", []tarMember{dir(b + "/"), symlink(b+"/layer.tar", "../"+strings.Repeat("d", 64)+"/layer.tar")}, "not a regular member"},
		{"a layer link to a link", []tarMember{symlink(b+"/layer.tar", "../"+a+"/layer.tar"), symlink(strings.Repeat("d", 64)+"/layer.tar", "../"+b+"/layer.tar")}, "not a regular member"},
		{"a layer link to itself", []tarMember{symlink(b+"/layer.tar", "../"+b+"/layer.tar")}, "is a symlink"},
		{"a layer link to a blob it lacks", []tarMember{symlink(b+"/layer.tar", "../blobs/sha256/"+b)}, "not a regular member"},
		{"a member below a layer link", []tarMember{symlink(b+"/layer.tar", "../"+a+"/layer.tar"), regular(b+"/layer.tar/x", nil)}, "below the layer link"},
		{"a directory below a layer link", []tarMember{symlink(b+"/layer.tar", "../"+a+"/layer.tar"), dir(b + "/layer.tar/x/")}, "below the layer link"},
		{"a layer link elsewhere", []tarMember{symlink("blobs/sha256/"+b, a+"/layer.tar")}, "is a symlink"},
		{"a layer link absolute", []tarMember{symlink(b+"/layer.tar", "/"+a+"/layer.tar")}, "is a symlink"},
		{"manifest.json a directory", []tarMember{dir("manifest.json/")}, "not a regular file (directory)"},
		{"index.json below the root", []tarMember{regular("blobs/index.json", []byte(`{}`))}, "not at the root"},
		{"oci-layout below the root", []tarMember{regular(a+"/oci-layout", []byte(`{}`))}, "not at the root"},
		{"a name spelt two ways", []tarMember{regular("./"+cfg+".json", []byte(`{}`))}, "appears twice"},
		{"a device", []tarMember{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "tty", Mode: 0o644}}}, "character device"},
		{"a fifo", []tarMember{{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "f", Mode: 0o644}}}, "fifo"},
		{"a .. that stays inside", []tarMember{regular(a+"/../x", nil)}, "has a .. in its name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "x.tar")
			writeMembers(t, p, slices.Concat(base, tc.members, end))
			_, err := Read(p)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p)):
				t.Errorf("got %v, want an error naming %s with %q", err, p, tc.want)
			}
		})
	}
}

// TestWriteWarnsUnprovable: a digest the Engine's save holds no blob of is
// recorded, and the writer says the bundle can't prove it.
func TestWriteWarnsUnprovable(t *testing.T) {
	t.Parallel()
	e, ids := newFakeEngine(`{"a":1}`, `{"b":2}`)
	var log bytes.Buffer
	entries := []Entry{
		{Expected: "reg:5000/a:1", ImageID: ids[0], Digest: "sha256:" + strings.Repeat("d", 64)},
		{Expected: "reg:5000/b:1", ImageID: ids[1]},
	}
	w, err := Write(context.Background(), e, filepath.Join(t.TempDir(), "b.tar"), entries, WriteOptions{Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if w.Manifest.Images[0].Digest != entries[0].Digest {
		t.Errorf("the digest is not recorded: %+v", w.Manifest.Images[0])
	}
	if n := strings.Count(log.String(), "can't prove it"); n != 1 || !strings.Contains(log.String(), "image=reg:5000/a:1") {
		t.Errorf("%d warnings, want one for reg:5000/a:1:\n%s", n, log.String())
	}
}

// TestLoaderStream: a transfer streamed into the Engine is what the Engine
// loads only once vetted whole: the members saying what it holds and tags
// reach the Engine last, after everything else; a transfer refused on the
// way never completes a load; an image the Engine computes otherwise than
// the transfer names is removed again.
func TestLoaderStream(t *testing.T) {
	t.Parallel()
	e, ids := newFakeEngine(`{"one":1}`)
	var b bytes.Buffer
	if _, err := Stream(context.Background(), e, &b, []Entry{{Name: "one", Expected: "reg:5000/one:1", ImageID: ids[0]}}, WriteOptions{Log: quiet}); err != nil {
		t.Fatal(err)
	}
	transfer := b.Bytes()
	var order []string
	tr := tar.NewReader(bytes.NewReader(transfer))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		order = append(order, hdr.Name)
	}

	e.remove(ids[0])
	var relayed bytes.Buffer
	img, _, err := relay(bytes.NewReader(transfer), &relayed, "reg:5000/one:1", "", ids[0])
	if err != nil || img.ImageID != ids[0] {
		t.Fatalf("relay: %+v %v", img, err)
	}
	var got []string
	tr = tar.NewReader(&relayed)
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		got = append(got, hdr.Name)
	}
	heldLast := func(a, b string) int { return boolCmp(isHeld(a), isHeld(b)) }
	want := slices.Clone(order)
	slices.SortStableFunc(want, heldLast)
	if !slices.Equal(got, want) || slices.Equal(want, order) {
		t.Errorf("relayed members %v, want %v: those sent (%v), the metadata last", got, want, order)
	}

	l := NewLoader(e, quiet)
	id, err := l.Stream(context.Background(), bytes.NewReader(transfer), "reg:5000/one:1", "", ids[0], registry.ArchiveOptions{})
	if err != nil || id != ids[0] {
		t.Fatalf("a good transfer: %q %v", id, err)
	}
	loads := e.loadCount()
	for _, tc := range []struct {
		name, want string
		transfer   []byte
		announced  string
	}{
		{"cut short", "cut short", transfer[:len(transfer)/2], ids[0]},
		{"announced as another", "announced as image", transfer, sha([]byte("other"))},
		{"for another image", "holds no image for it", transfer, ""},
		{"more after the archive", "follow the archive's end", append(slices.Clone(transfer), make([]byte, 20<<10)...), ids[0]},
	} {
		expected := "reg:5000/one:1"
		if tc.name == "for another image" {
			expected = "reg:5000/two:1"
		}
		if _, err := l.Stream(context.Background(), bytes.NewReader(tc.transfer), expected, "", tc.announced, registry.ArchiveOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if n := e.loadCount() - loads; n != 4 {
		t.Fatalf("the fake engine saw %d loads, want 4 (each one refused)", n)
	}

	e.remove(ids[0])
	e.altered = true
	if _, err := l.Stream(context.Background(), bytes.NewReader(transfer), "reg:5000/one:1", "", ids[0], registry.ArchiveOptions{}); err == nil || !strings.Contains(err.Error(), "not what the bundle's manifest names") {
		t.Fatalf("an image loaded as another ID: %v", err)
	}
	if altered := sha(append([]byte(`{"one":1}`), ' ')); !slices.Equal(e.removed, []string{altered}) {
		t.Errorf("removed %v, want %s (what the refused load added)", e.removed, altered)
	}
}

func isHeld(name string) bool {
	return slices.Contains(metadataNames, name) || name == MemberName
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// TestVetIndex: an OCI layout's index.json may name only images the archive
// holds whole, every blob read and hashing to its name (the containerd
// image store takes index.json's digests on trust, and a load of anything
// less reports an ID whose content is missing); a blob under another's
// name is refused as it is read.
func TestVetIndex(t *testing.T) {
	t.Parallel()
	cfg, layer := []byte(`{"os":"linux"}`), []byte("layer bytes")
	mf := []byte(`{"config":{"digest":"` + sha(cfg) + `"},"layers":[{"digest":"` + sha(layer) + `"}]}`)
	other := []byte(`{"config":{"digest":"` + sha([]byte("elsewhere")) + `"}}`)
	idx := []byte(`{"manifests":[{"digest":"` + sha(mf) + `"},{"digest":"` + sha([]byte("a platform not saved")) + `"}]}`)
	blob := func(data []byte) member { return member{"blobs/sha256/" + hexOf(sha(data)), data} }
	index := func(dgst string) member {
		return member{"index.json", []byte(`{"manifests":[{"digest":"` + dgst + `"}]}`)}
	}
	for _, tc := range []struct {
		name    string
		members []member
		err     string
	}{
		{"whole", []member{blob(cfg), blob(layer), blob(mf), index(sha(mf))}, ""},
		{"through an index, one platform saved", []member{blob(cfg), blob(layer), blob(mf), blob(idx), index(sha(idx))}, ""},
		{"no such manifest", []member{blob(cfg), blob(layer), index(sha(mf))}, "no blob " + sha(mf)},
		{"a layer missing", []member{blob(cfg), blob(mf), index(sha(mf))}, "names " + sha(layer) + ", which the archive does not hold"},
		{"an index of no saved manifest", []member{blob(idx), index(sha(idx))}, "none of its manifests"},
		{"a manifest named as another", []member{blob(cfg), blob(layer), {"blobs/sha256/" + hexOf(sha(mf)), other}, index(sha(mf))}, "does not hash to its name"},
		{"a layer named as another", []member{blob(cfg), {"blobs/sha256/" + hexOf(sha(layer)), []byte("other bytes")}, blob(mf), index(sha(mf))}, "does not hash to its name"},
		// Configs (here 8 of 4 MiB, the 32 MiB of JSON blobs kept) are not
		// kept: the manifest after them still is.
		{"configs past the budget of kept blobs", append(bigConfigs(8, blob), blob(cfg), blob(layer), blob(mf), index(sha(mf))), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "x.tar")
			if err := os.WriteFile(p, tarOf(t, tc.members...), 0o644); err != nil {
				t.Fatal(err)
			}
			fs, err := walk(mustOpen(t, p))
			if err == nil {
				err = fs.vet()
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("got %v, want %q", err, tc.err)
			}
		})
	}
}

// bigConfigs is n image configs of maxBlobJSON bytes each, as blobs.
func bigConfigs(n int, blob func([]byte) member) []member {
	var out []member
	for i := range n {
		data := []byte(fmt.Sprintf(`{"os":"linux","history":[{"comment":"%d"}]}`, i))
		data = append(data, bytes.Repeat([]byte(" "), maxBlobJSON-len(data))...) // JSON, maxBlobJSON bytes
		out = append(out, blob(data))
	}
	return out
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
