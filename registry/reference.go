package registry

import (
	"fmt"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Host returns the registry host of a reference ("docker.io" for Docker Hub).
func Host(ref string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("parsing reference %q: %w", ref, err)
	}
	return reference.Domain(named), nil
}

// WithDigest returns the repository of ref pinned to dgst (repo@sha256:...),
// dropping any tag: a pull by digest makes the registry prove the content.
func WithDigest(ref, dgst string) (string, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", fmt.Errorf("parsing reference %q: %w", ref, err)
	}
	d, err := digest.Parse(dgst)
	if err != nil {
		return "", fmt.Errorf("parsing digest %q: %w", dgst, err)
	}
	pinned, err := reference.WithDigest(reference.TrimNamed(named), d)
	if err != nil {
		return "", fmt.Errorf("pinning %q to %s: %w", ref, dgst, err)
	}
	return pinned.String(), nil
}
