package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// fakeDocker is a daemon with local images and "remote" registries that
// serve some references and fail others. It records every call.
type fakeDocker struct {
	mu      sync.Mutex
	local   map[string]registry.Image // ref → image
	remote  map[string]registry.Image // pullable ref → image
	failing map[string]error          // ref → pull error
	inspect error                     // when set, every Inspect fails with it
	calls   []string
}

var _ Docker = (*fakeDocker)(nil)

func (d *fakeDocker) Inspect(_ context.Context, ref string) (registry.Image, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "inspect "+ref)
	if d.inspect != nil {
		return registry.Image{}, d.inspect
	}
	im, ok := d.local[ref]
	if !ok {
		return registry.Image{}, fmt.Errorf("inspecting %s: %w", ref, registry.ErrNotFound)
	}
	return im, nil
}

func (d *fakeDocker) Pull(_ context.Context, ref string, opts registry.PullOptions) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "pull "+ref+" "+opts.Platform)
	if err, ok := d.failing[ref]; ok {
		return err
	}
	im, ok := d.remote[ref]
	if !ok {
		return fmt.Errorf("pulling %s: %w", ref, &registry.PullError{Msg: "manifest unknown", Kind: registry.ErrPullNotFound})
	}
	d.local[ref] = im
	return nil
}

// ContainerdStore: the fake is the classic store (storeDocker says otherwise).
func (d *fakeDocker) ContainerdStore(context.Context) bool { return false }

func (d *fakeDocker) Tag(_ context.Context, source, target string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, "tag "+source+" "+target)
	for _, im := range d.local {
		if im.ID == source {
			d.local[target] = im
			return nil
		}
	}
	return fmt.Errorf("no image %s", source)
}

func (d *fakeDocker) pulls() []string {
	var out []string
	for _, c := range d.calls {
		if strings.HasPrefix(c, "pull ") || strings.HasPrefix(c, "tag ") {
			out = append(out, c)
		}
	}
	return out
}

const (
	dgst    = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	dgstOld = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	exp     = "cluster:5000/app:1"
	src1    = "docker.io/library/app:1"
	src2    = "mirror.example/app:1"
)

func TestFetch(t *testing.T) {
	t.Parallel()
	newImg := registry.Image{ID: "sha256:new", RepoDigests: []string{"x@" + dgst}}
	oldImg := registry.Image{ID: "sha256:old", RepoDigests: []string{"x@" + dgstOld}}
	refused := errors.New("dial tcp 127.0.0.1:5000: connect: connection refused")
	for _, tc := range []struct {
		name    string
		img     config.Image
		local   map[string]registry.Image
		remote  map[string]registry.Image
		failing map[string]error
		want    Outcome
		source  string
		id      string
		calls   []string // pulls and tags, in order
		errs    []string // substrings of Err
	}{
		{
			name:   "pulled from expected",
			img:    config.Image{Expected: exp, Sources: []string{src1}},
			remote: map[string]registry.Image{exp: newImg, src1: newImg},
			want:   Pulled, id: "sha256:new",
			calls: []string{"pull " + exp + " "},
		},
		{
			name:   "expected unchanged",
			img:    config.Image{Expected: exp},
			local:  map[string]registry.Image{exp: newImg},
			remote: map[string]registry.Image{exp: newImg},
			want:   UpToDate, id: "sha256:new",
			calls: []string{"pull " + exp + " "},
		},
		{
			name:  "digest already present: no network",
			img:   config.Image{Expected: exp, Sources: []string{src1}, Digest: dgst},
			local: map[string]registry.Image{exp: newImg},
			want:  UpToDate, id: "sha256:new",
		},
		{
			name:    "bootstrap: retagged from the source",
			img:     config.Image{Expected: exp, Sources: []string{src1}, Platform: "linux/arm64"},
			remote:  map[string]registry.Image{src1: newImg},
			failing: map[string]error{exp: refused},
			want:    Retagged, source: src1, id: "sha256:new",
			calls: []string{"pull " + exp + " linux/arm64", "pull " + src1 + " linux/arm64", "tag sha256:new " + exp},
		},
		{
			name:   "second source after a failing first",
			img:    config.Image{Expected: exp, Sources: []string{src1, src2}},
			remote: map[string]registry.Image{src2: newImg},
			want:   Retagged, source: src2, id: "sha256:new",
			calls: []string{"pull " + exp + " ", "pull " + src1 + " ", "pull " + src2 + " ", "tag sha256:new " + exp},
		},
		{
			name:   "source that serves what is already there",
			img:    config.Image{Expected: exp, Sources: []string{src1}},
			local:  map[string]registry.Image{exp: newImg},
			remote: map[string]registry.Image{src1: newImg},
			want:   UpToDate, source: src1, id: "sha256:new",
			calls: []string{"pull " + exp + " ", "pull " + src1 + " ", "tag sha256:new " + exp},
		},
		{
			name:   "digest: pulls by repo@digest and tags",
			img:    config.Image{Expected: exp, Sources: []string{src1}, Digest: dgst},
			local:  map[string]registry.Image{exp: oldImg},
			remote: map[string]registry.Image{"cluster:5000/app@" + dgst: newImg},
			want:   Pulled, id: "sha256:new",
			calls: []string{"pull cluster:5000/app@" + dgst + " ", "tag sha256:new " + exp},
		},
		{
			name:   "digest: sources pulled by digest too",
			img:    config.Image{Expected: exp, Sources: []string{src1}, Digest: dgst},
			remote: map[string]registry.Image{"docker.io/library/app@" + dgst: newImg, src1: oldImg},
			want:   Retagged, source: src1, id: "sha256:new",
			calls: []string{"pull cluster:5000/app@" + dgst + " ", "pull docker.io/library/app@" + dgst + " ", "tag sha256:new " + exp},
		},
		{
			name:   "digest reference as expected: nothing to tag",
			img:    config.Image{Expected: "cluster:5000/app@" + dgst, Digest: dgst},
			remote: map[string]registry.Image{"cluster:5000/app@" + dgst: newImg},
			want:   Pulled, id: "sha256:new",
			calls: []string{"pull cluster:5000/app@" + dgst + " "},
		},
		{
			name:    "nothing pulls but expected is present",
			img:     config.Image{Expected: exp, Sources: []string{src1}},
			local:   map[string]registry.Image{exp: oldImg},
			failing: map[string]error{exp: refused},
			want:    Stale, id: "sha256:old",
			calls: []string{"pull " + exp + " ", "pull " + src1 + " "},
			errs:  []string{"expected: dial tcp", "source " + src1 + ": pulling " + src1 + ": manifest unknown"},
		},
		{
			name:  "digest: present with other content is a failure",
			img:   config.Image{Expected: exp, Digest: dgst},
			local: map[string]registry.Image{exp: oldImg},
			want:  Failed,
			calls: []string{"pull cluster:5000/app@" + dgst + " "},
			errs:  []string{"the local " + exp + " is not content " + dgst},
		},
		{
			name:    "failed: every reference listed",
			img:     config.Image{Expected: exp, Sources: []string{src1, src2}},
			failing: map[string]error{exp: refused, src2: errors.New("unauthorized: authentication required")},
			want:    Failed,
			calls:   []string{"pull " + exp + " ", "pull " + src1 + " ", "pull " + src2 + " "},
			errs:    []string{"expected: dial tcp 127.0.0.1:5000", "source " + src1 + ": pulling", "source " + src2 + ": unauthorized"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := &fakeDocker{local: map[string]registry.Image{}, remote: tc.remote, failing: tc.failing}
			for k, v := range tc.local {
				d.local[k] = v
			}
			f := &Fetcher{Docker: d, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			got := f.Fetch(context.Background(), tc.img)
			if got.Outcome != tc.want || got.Source != tc.source || got.ImageID != tc.id {
				t.Errorf("got %q from %q, id %q (err %v); want %q from %q, id %q", got.Outcome, got.Source, got.ImageID, got.Err, tc.want, tc.source, tc.id)
			}
			if calls := d.pulls(); !reflect.DeepEqual(calls, tc.calls) {
				t.Errorf("got calls\n%q\nwant\n%q", calls, tc.calls)
			}
			for _, want := range tc.errs {
				if got.Err == nil || !strings.Contains(got.Err.Error(), want) {
					t.Errorf("got error %v, want it to contain %q", got.Err, want)
				}
			}
			if len(tc.errs) == 0 && got.Err != nil {
				t.Errorf("got error %v, want none", got.Err)
			}
			if tc.want == Retagged && d.local[exp].ID != tc.id {
				t.Errorf("after retag, expected names %q, want %q", d.local[exp].ID, tc.id)
			}
		})
	}
}

func TestFetchDaemonDown(t *testing.T) {
	t.Parallel()
	down := errors.New("Cannot connect to the Docker daemon at unix:///x.sock")
	d := &fakeDocker{local: map[string]registry.Image{}, inspect: down}
	f := &Fetcher{Docker: d, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	got := f.Fetch(context.Background(), config.Image{Expected: exp, Sources: []string{src1}})
	if got.Outcome != Failed || !errors.Is(got.Err, down) {
		t.Errorf("got %q, %v; want failed with the daemon's error", got.Outcome, got.Err)
	}
	if p := d.pulls(); len(p) != 0 {
		t.Errorf("got pulls %q with the daemon down, want none", p)
	}
}

func TestOnceOrderAndCancel(t *testing.T) {
	t.Parallel()
	img := registry.Image{ID: "sha256:x"}
	d := &fakeDocker{local: map[string]registry.Image{}, remote: map[string]registry.Image{"r/a:1": img, "r/b:1": img, "r/c:1": img}}
	var logs strings.Builder
	f := &Fetcher{Docker: d, Log: slog.New(slog.NewJSONHandler(&logs, nil))}
	images := []config.Image{{Name: "a", Expected: "r/a:1"}, {Name: "b", Expected: "r/b:1"}, {Name: "c", Expected: "r/c:1"}, {Name: "d", Expected: "r/d:1"}}
	res := f.Once(context.Background(), images, 2)
	for i, r := range res {
		if r.Image.Name != images[i].Name {
			t.Errorf("result %d is %q, want %q", i, r.Image.Name, images[i].Name)
		}
	}
	if res[3].Outcome != Failed || res[0].Outcome != Pulled {
		t.Errorf("got %q and %q, want pulled and failed", res[0].Outcome, res[3].Outcome)
	}
	for _, want := range []string{`"level":"INFO","msg":"image ready","image":"r/a:1","name":"a","result":"pulled"`, `"level":"ERROR","msg":"image not available","image":"r/d:1"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range f.Once(ctx, images, 1) {
		if r.Outcome != Failed {
			t.Errorf("cancelled run: %s is %q, want failed", r.Image.Name, r.Outcome)
		}
	}
}
