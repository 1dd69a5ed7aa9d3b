package agent

import (
	"context"
	"errors"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Bundles serves images from bundle files, the `bundle:` sources.
// *bundle.Loader implements it; the agent never reads a bundle itself.
type Bundles interface {
	// Image makes the image the bundle at path holds for expected present
	// in Docker, loading the bundle when it must, and returns its ID,
	// verified against the bundle's manifest. It tags nothing. With dgst
	// set, the bundle must prove the image is that registry digest (the
	// blob dgst in the archive, leading to the ID loaded), not merely
	// record it: a bundle that only claims the pin serves nothing.
	Image(ctx context.Context, path, expected, dgst string, opts registry.ArchiveOptions) (string, error)
}

// errOffline is why expected was not tried under Offline.
var errOffline = errors.New("expected: not pulled: no registry is asked (-bundle without a config)")

// fromBundle serves img from the bundle at path: the bundle's verified
// image, tagged by ID as expected (never by a name the archive carries).
// A failed tag is the daemon's, not the bundle's: a settle error.
func (f *Fetcher) fromBundle(ctx context.Context, img config.Image, path string) (string, error) {
	if f.Bundles == nil {
		return "", errors.New("bundle sources are not served here")
	}
	id, err := f.Bundles.Image(ctx, path, img.Expected, img.Digest, registry.ArchiveOptions{StallTimeout: f.StallTimeout, QuietTimeout: f.PullTimeout})
	if err != nil {
		return "", err
	}
	if err := f.Docker.Tag(ctx, id, img.Expected); err != nil {
		return "", &settleError{err}
	}
	return id, nil
}
