package bundle

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
)

// A config's digest pin names a registry manifest (or index). The bundle's
// manifest records a digest for each image, but that is only a claim: a
// bundle may record X for any content. What proves an image is X is the
// blob X itself, in the archive under blobs/sha256/ and hashing to X, and
// a path from it to the image loaded: X is the loaded image's ID (the
// containerd image store's ID is its manifest or index digest), or X is a
// manifest whose config is the loaded ID (the classic store's ID is the
// config digest), or X is an index one of whose manifests the archive
// holds (hashing to its digest) and leads so to the loaded ID.

// maxProofBlobs bounds how many blobs a proof reads: an index and its
// manifests, and an index of indexes at most.
const maxProofBlobs = 256

// proveDigest reads the blob dgst from the bundle at file, and what it
// leads to, and returns the image IDs it proves to be dgst: dgst itself,
// the config of a manifest, and for an index the same of each manifest of
// it that the archive holds. An error says why dgst is not proven at all.
func proveDigest(file, dgst string) ([]string, error) {
	return prove(dgst, func(want []string) (map[string][]byte, error) { return readBlobs(file, want) })
}

// prove is proveDigest over blobs read by read: the blobs of want (hex
// digests) the archive holds, each checked to hash to its name.
func prove(dgst string, read func(want []string) (map[string][]byte, error)) ([]string, error) {
	top := hexOf(dgst)
	if !isHex(top) {
		return nil, fmt.Errorf("%s is not a sha256 digest, which is all a bundle's blobs are named by", dgst)
	}
	var proved []string
	level := []string{top}
	seen := map[string]bool{top: true}
	for depth := 0; depth < 3 && len(level) > 0; depth++ {
		blobs, err := read(level)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, h := range level {
			data, ok := blobs[h]
			if !ok {
				if depth == 0 {
					return nil, fmt.Errorf("the archive holds no blob %s (no member blobs/sha256/%s), only its manifest's claim; a bundle written on the classic image store never holds its images' registry manifests", dgst, top)
				}
				continue // a manifest of the index that the archive does not hold
			}
			proved = append(proved, "sha256:"+h)
			var m ociIndex
			if json.Unmarshal(data, &m) != nil {
				continue
			}
			if m.Config != nil && m.Config.Digest != "" {
				proved = append(proved, m.Config.Digest)
			}
			for _, d := range m.Manifests {
				if ch := hexOf(d.Digest); isHex(ch) && !seen[ch] && len(seen) < maxProofBlobs {
					seen[ch] = true
					next = append(next, ch)
				}
			}
		}
		level = next
	}
	return proved, nil
}

// readBlobs reads the members blobs/sha256/<hex> of the bundle at file
// for each hex of want that it holds, each checked to hash to its name.
func readBlobs(file string, want []string) (map[string][]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]byte{}
	var total int64
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the archive again: %w", err)
		}
		name := path.Clean(hdr.Name)
		h, ok := strings.CutPrefix(name, "blobs/sha256/")
		if !ok || hdr.Typeflag != tar.TypeReg || !slices.Contains(want, h) {
			continue
		}
		if total += hdr.Size; total > maxBlobsJSON {
			return nil, fmt.Errorf("the blobs that would prove it are more than %d bytes", maxBlobsJSON)
		}
		data, err := readMember(tr, hdr, maxBlobJSON)
		if err != nil {
			return nil, err
		}
		if got := digest.FromBytes(data).String(); got != "sha256:"+h {
			return nil, fmt.Errorf("member %q does not hash to its name (its content is %s)", hdr.Name, got)
		}
		out[h] = data
	}
}

// keptBlobs returns the blobs of want (hex digests) among the small JSON
// blobs a pass kept (facts.wants with keepBlobs), each checked to hash to
// its name: what prove reads from an archive that was streamed, not kept.
func (f *facts) keptBlobs(want []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, h := range want {
		data, ok := f.blobs["sha256:"+h]
		if !ok {
			continue
		}
		if got := digest.FromBytes(data).String(); got != "sha256:"+h {
			return nil, fmt.Errorf("member blobs/sha256/%s does not hash to its name (its content is %s)", h, got)
		}
		out[h] = data
	}
	return out, nil
}
