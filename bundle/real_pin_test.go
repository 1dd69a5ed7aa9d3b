package bundle

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// TestRealDigestPin: with a digest pin, only a bundle that proves the
// image is that digest serves it: the manifest blob present, hashing to
// the pin, and naming the loaded image's config. A manifest that only
// claims the digest is refused, saying the pin is unproven, before the
// load.
func TestRealDigestPin(t *testing.T) {
	t.Parallel()
	b := newRealBundle(t, "pin")
	manifestOf := func(config string) []byte {
		return []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"` + config + `","size":1},"layers":[]}`)
	}
	good := manifestOf(b.id)
	elsewhere := manifestOf(b.victimID) // the classic store's ID is the config digest
	blob := func(dgst string, data []byte) []tarMember {
		return []tarMember{dir("blobs/"), dir("blobs/sha256/"), regular("blobs/sha256/"+hexOf(dgst), data)}
	}
	for _, tc := range []struct {
		name  string
		pin   string
		extra []tarMember
		want  string // "" for served
	}{
		{"claimed only", sha(good), nil, "unproven"},
		{"a blob of other content", sha(good), blob(sha(good), elsewhere), "does not hash to its name"}, // refused by the walk, before any proof
		{"a manifest of another image", sha(elsewhere), blob(sha(elsewhere), elsewhere), "unproven"},
		{"proven", sha(good), blob(sha(good), good), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var members []tarMember
			for _, m := range insertBefore(b.members, tc.extra...) {
				if m.hdr.Name == MemberName {
					var man Manifest
					if err := json.Unmarshal(m.data, &man); err != nil {
						t.Fatal(err)
					}
					man.Images[0].Digest = tc.pin
					m.data, _ = json.Marshal(man)
				}
				members = append(members, m)
			}
			path := b.craft(t, "pin-"+strings.ReplaceAll(tc.name, " ", "-"), members)
			l := NewLoader(b.eng, quiet)
			id, err := l.Image(context.Background(), path, b.expected, tc.pin, registry.ArchiveOptions{})
			if tc.want == "" {
				if err != nil || id != b.id {
					t.Errorf("got %q %v, want %s", id, err, b.id)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.pin) {
					t.Errorf("got %q %v, want an error naming %s and %s, saying %q", id, err, path, tc.pin, tc.want)
				}
				if n := l.Loads(path); n != 0 {
					t.Errorf("the Engine loaded it %d times, want it refused before", n)
				}
			}
			_ = bed.Remove(context.Background(), b.id)
		})
	}
}
