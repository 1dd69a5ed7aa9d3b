package cluster

import (
	"fmt"

	"github.com/distribution/reference"
)

// NormalizeRef normalises an image reference as prefetch's config loader
// normalises `expected` (traefik:v3 is docker.io/library/traefik:v3, no tag
// is :latest, repo@sha256:... stays so), so that what an operator types
// matches what the agents report. A reference naming both a tag and a
// digest is refused: no agent's expected ever does (the loader refuses it),
// so waiting for one would never end.
func NormalizeRef(s string) (string, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return "", fmt.Errorf("%q is not an image reference: %w", s, err)
	}
	_, digested := named.(reference.Digested)
	_, tagged := named.(reference.Tagged)
	switch {
	case digested && tagged:
		return "", fmt.Errorf("%q names both a tag and a digest; an agent's expected image names one of them (its config pins content with digest = ...)", s)
	case digested:
		return named.String(), nil
	}
	return reference.TagNameOnly(named).String(), nil
}

// normalized is ref normalised, or ref itself if it does not parse (an
// agent's expected always does: its loader normalised it).
func normalized(ref string) string {
	if n, err := NormalizeRef(ref); err == nil {
		return n
	}
	return ref
}
