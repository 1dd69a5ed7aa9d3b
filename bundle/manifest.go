package bundle

import (
	_ "crypto/sha256" // registers sha256 with go-digest

	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// MemberName is the archive member that holds the Manifest. It is the
// last member, in a directory of its own so that no importer mistakes it
// for an image config (a top-level *.json).
const MemberName = "prefetch/bundle.json"

// Version is the manifest format this package writes and reads.
const Version = 1

// What an image_id is, which depends on the image store of the daemon that
// wrote the bundle.
const (
	// KindConfig: the classic image store's ID, the digest of the image's
	// config.
	KindConfig = "config"
	// KindManifest: the containerd image store's ID, the digest of the
	// image's manifest or index.
	KindManifest = "manifest"
)

// Manifest says what a bundle holds.
type Manifest struct {
	Version int       `json:"version"`
	Created time.Time `json:"created"`
	Images  []Image   `json:"images"`
}

// Image is one image of a bundle.
type Image struct {
	// Name is the image block's label in the config the bundle was made
	// from.
	Name string `json:"name,omitempty"`
	// Expected is the normalised reference the image is tagged as.
	Expected string `json:"expected"`
	// ImageID is the image's ID on the daemon that wrote the bundle;
	// IDKind says which kind of ID that is.
	ImageID string `json:"image_id"`
	IDKind  string `json:"image_id_kind"`
	// ConfigDigest is the digest of the image's config, which is its ID on
	// a classic-store daemon, when the archive shows it.
	ConfigDigest string `json:"config_digest,omitempty"`
	// Digest is the registry manifest digest the image was pulled by, when
	// known: a config's `digest` pin is checked against it.
	Digest string `json:"digest,omitempty"`
	// Source is where the writer's daemon got it, for people.
	Source string `json:"source,omitempty"`
}

// IDs are the content addresses a daemon may give this image once it is
// loaded: its ID on the writer's image store, and its config digest (the
// classic store's ID).
func (i Image) IDs() []string {
	ids := []string{i.ImageID}
	if i.ConfigDigest != "" && i.ConfigDigest != i.ImageID {
		ids = append(ids, i.ConfigDigest)
	}
	return ids
}

// Find returns the image whose expected reference is expected.
func (m *Manifest) Find(expected string) (Image, bool) {
	i := slices.IndexFunc(m.Images, func(img Image) bool { return img.Expected == expected })
	if i < 0 {
		return Image{}, false
	}
	return m.Images[i], true
}

// Expected lists the expected references the bundle holds, for messages.
func (m *Manifest) Expected() []string {
	out := make([]string, 0, len(m.Images))
	for _, img := range m.Images {
		out = append(out, img.Expected)
	}
	return out
}

// maxManifest bounds the manifest member: ten thousand images take a tenth
// of it.
const maxManifest = 16 << 20

// parseManifest decodes and checks a manifest member.
func parseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", MemberName, err)
	}
	if m.Version != Version {
		return nil, fmt.Errorf("%s has version %d; this prefetch reads version %d", MemberName, m.Version, Version)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", MemberName, err)
	}
	return &m, nil
}

// check refuses a manifest that can't be served from: no image, an image
// without a usable reference or ID, an expected reference listed twice.
func (m *Manifest) check() error {
	if len(m.Images) == 0 {
		return errors.New("it lists no image")
	}
	seen := map[string]bool{}
	var errs []error
	for n, img := range m.Images {
		if err := img.check(); err != nil {
			errs = append(errs, fmt.Errorf("image %d (%q): %w", n+1, img.Expected, err))
			continue
		}
		if seen[img.Expected] {
			errs = append(errs, fmt.Errorf("image %d: %s is listed twice", n+1, img.Expected))
		}
		seen[img.Expected] = true
	}
	return errors.Join(errs...)
}

func (i Image) check() error {
	named, err := reference.ParseNormalizedNamed(i.Expected)
	if err != nil {
		return fmt.Errorf("expected is not a reference: %w", err)
	}
	if _, ok := named.(reference.NamedTagged); !ok || named.String() != i.Expected {
		return errors.New("expected is not a normalised repo:tag reference")
	}
	for what, d := range map[string]string{"image_id": i.ImageID, "config_digest": i.ConfigDigest, "digest": i.Digest} {
		if d == "" && what != "image_id" {
			continue
		}
		if _, err := digest.Parse(d); err != nil {
			return fmt.Errorf("%s %q is not a digest: %w", what, d, err)
		}
	}
	if i.IDKind != KindConfig && i.IDKind != KindManifest {
		return fmt.Errorf("image_id_kind %q is neither %q nor %q", i.IDKind, KindConfig, KindManifest)
	}
	if i.IDKind == KindConfig && i.ConfigDigest != "" && i.ConfigDigest != i.ImageID {
		return errors.New("image_id is a config digest but config_digest differs")
	}
	return nil
}

// describe names an image's IDs for messages: "sha256:ab... (config)".
func (i Image) describe() string {
	s := fmt.Sprintf("%s (%s digest)", i.ImageID, i.IDKind)
	if i.ConfigDigest != "" && i.ConfigDigest != i.ImageID {
		s += fmt.Sprintf(", config %s", i.ConfigDigest)
	}
	return s
}

// hexOf is a digest's hex part, "" if it is not sha256.
func hexOf(d string) string {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok {
		return ""
	}
	return h
}
