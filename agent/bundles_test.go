package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// fakeBundles holds, per bundle file, the images it would load; loading one
// puts it in the fake daemon, by ID only (a bundle names no tag).
type fakeBundles struct {
	d      *fakeDocker
	files  map[string]map[string]registry.Image // path → expected → image
	broken map[string]error                     // path → why it can't be loaded
	calls  []string
}

var _ Bundles = (*fakeBundles)(nil)

func (b *fakeBundles) Image(_ context.Context, path, expected, dgst string, opts registry.ArchiveOptions) (string, error) {
	b.calls = append(b.calls, path+" "+expected+" "+dgst)
	if err := b.broken[path]; err != nil {
		return "", err
	}
	im, ok := b.files[path][expected]
	if !ok {
		return "", errors.New("the bundle holds no image for it")
	}
	b.d.mu.Lock()
	b.d.local[im.ID] = im
	b.d.mu.Unlock()
	return im.ID, nil
}

// TestFetchBundleSource: a bundle source is tried in its place among the
// sources; its image is tagged as expected by ID; offline, no registry is
// asked at all.
func TestFetchBundleSource(t *testing.T) {
	t.Parallel()
	const path = "/boot/b.tar"
	bundled := registry.Image{ID: "sha256:bundled"}
	refused := errors.New("dial tcp 127.0.0.1:5000: connect: connection refused")
	for _, tc := range []struct {
		name    string
		img     config.Image
		local   map[string]registry.Image
		broken  error
		offline bool
		want    Outcome
		source  string
		calls   []string
		errs    []string
	}{
		{
			name:   "after a failing registry source",
			img:    config.Image{Expected: exp, Sources: []string{src1, "bundle:" + path}},
			want:   Retagged,
			source: "bundle:" + path,
			calls:  []string{"pull " + exp + " ", "pull " + src1 + " ", "tag sha256:bundled " + exp},
		},
		{
			name:   "already tagged: up to date",
			img:    config.Image{Expected: exp, Sources: []string{"bundle:" + path}},
			local:  map[string]registry.Image{exp: bundled},
			want:   UpToDate,
			source: "bundle:" + path,
			calls:  []string{"pull " + exp + " ", "tag sha256:bundled " + exp},
		},
		{
			name:    "offline: no registry asked",
			img:     config.Image{Expected: exp, Sources: []string{src1, "bundle:" + path}},
			offline: true,
			want:    Retagged,
			source:  "bundle:" + path,
			calls:   []string{"tag sha256:bundled " + exp},
		},
		{
			name:   "a broken bundle: failed, saying why",
			img:    config.Image{Expected: exp, Sources: []string{"bundle:" + path}},
			broken: errors.New("the file is truncated"),
			want:   Failed,
			calls:  []string{"pull " + exp + " "},
			errs:   []string{"expected: ", "source bundle:" + path + ": the file is truncated"},
		},
		{
			name:   "a broken bundle, expected present: not refreshed",
			img:    config.Image{Expected: exp, Sources: []string{"bundle:" + path}},
			local:  map[string]registry.Image{exp: {ID: "sha256:old"}},
			broken: errors.New("the file is truncated"),
			want:   Stale,
			calls:  []string{"pull " + exp + " "},
			errs:   []string{"source bundle:" + path + ": the file is truncated"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := &fakeDocker{local: map[string]registry.Image{}, remote: map[string]registry.Image{}, failing: map[string]error{exp: refused, src1: refused}}
			for k, v := range tc.local {
				d.local[k] = v
			}
			b := &fakeBundles{d: d, files: map[string]map[string]registry.Image{path: {exp: bundled}}, broken: map[string]error{path: tc.broken}}
			f := &Fetcher{Docker: d, Bundles: b, Offline: tc.offline, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			res := f.Fetch(context.Background(), tc.img)
			if res.Outcome != tc.want || res.Source != tc.source {
				t.Fatalf("got %q from %q (%v), want %q from %q", res.Outcome, res.Source, res.Err, tc.want, tc.source)
			}
			if got := d.pulls(); !reflect.DeepEqual(got, tc.calls) {
				t.Errorf("pulls and tags:\ngot  %q\nwant %q", got, tc.calls)
			}
			for _, e := range tc.errs {
				if res.Err == nil || !strings.Contains(res.Err.Error(), e) {
					t.Errorf("error %v lacks %q", res.Err, e)
				}
			}
		})
	}
}

// TestFetchBundleDigest: the image's digest pin is handed to the bundle.
func TestFetchBundleDigest(t *testing.T) {
	t.Parallel()
	d := &fakeDocker{local: map[string]registry.Image{}, remote: map[string]registry.Image{}, failing: map[string]error{}}
	b := &fakeBundles{d: d, files: map[string]map[string]registry.Image{"/b.tar": {exp: {ID: "sha256:x"}}}}
	f := &Fetcher{Docker: d, Bundles: b, Offline: true, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fetch(context.Background(), config.Image{Expected: exp, Digest: dgst, Sources: []string{"bundle:/b.tar"}})
	if want := []string{"/b.tar " + exp + " " + dgst}; !reflect.DeepEqual(b.calls, want) {
		t.Errorf("bundle asked %q, want %q", b.calls, want)
	}
}

// TestFetchBundleUnserved: without a Bundles, a bundle source fails and
// the next source is tried.
func TestFetchBundleUnserved(t *testing.T) {
	t.Parallel()
	d := &fakeDocker{local: map[string]registry.Image{}, remote: map[string]registry.Image{src1: {ID: "sha256:s"}}, failing: map[string]error{exp: errors.New("refused")}}
	f := &Fetcher{Docker: d, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	res := f.Fetch(context.Background(), config.Image{Expected: exp, Sources: []string{"bundle:/b.tar", src1}})
	if res.Outcome != Retagged || res.Source != src1 {
		t.Errorf("got %q from %q (%v), want retagged from %s", res.Outcome, res.Source, res.Err, src1)
	}
}
