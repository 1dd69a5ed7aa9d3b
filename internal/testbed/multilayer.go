package testbed

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// SeedLayers writes an image of layers layers, each a tar of one file of
// size bytes made from seed and the layer's number (so no two images share
// a layer unless their seeds match), for this machine's linux platform,
// straight to the registry ref names (plain HTTP: ref's host is one of the
// bed's registries on 127.0.0.1, not a proxy in front of it). No daemon is
// involved: docker import makes one layer only. It returns the manifest
// digest.
func SeedLayers(ctx context.Context, ref, seed string, layers, size int) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("seeding %s: %w", ref, err)
	}
	cfg, err := empty.Image.ConfigFile()
	if err != nil {
		return "", err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		return "", err
	}
	var ls []v1.Layer
	for i := range layers {
		var buf bytes.Buffer
		if err := writeLayer(&buf, fmt.Sprintf("%s/%d", seed, i), size); err != nil {
			return "", err
		}
		b := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
		if err != nil {
			return "", fmt.Errorf("seeding %s: layer %d: %w", ref, i, err)
		}
		ls = append(ls, l)
	}
	if img, err = mutate.AppendLayers(img, ls...); err != nil {
		return "", fmt.Errorf("seeding %s: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("seeding %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
