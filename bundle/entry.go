package bundle

import (
	"strings"

	"github.com/distribution/reference"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// EntryFor describes the local image im, present as expected (name is its
// config label, source where it came from, pinned the config's digest pin),
// for Write. Its digest is the pin, else the registry digest im was pulled
// by from expected's repository, else from source's; empty when unknown.
func EntryFor(name, expected, source, pinned string, im registry.Image) Entry {
	e := Entry{Name: name, Expected: expected, ImageID: im.ID, Digest: pinned, Source: source}
	for _, ref := range []string{expected, source} {
		if e.Digest != "" {
			break
		}
		e.Digest = digestIn(im.RepoDigests, ref)
	}
	return e
}

// digestIn is the digest of the repo digest in repoDigests whose
// repository is ref's.
func digestIn(repoDigests []string, ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	for _, rd := range repoDigests {
		repo, d, ok := strings.Cut(rd, "@")
		if !ok {
			continue
		}
		if rn, err := reference.ParseNormalizedNamed(repo); err == nil && rn.Name() == named.Name() {
			return d
		}
	}
	return ""
}
