package bundle

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Read reads the bundle at path and returns its manifest, after walking
// the whole archive: every member's header must be there and every member
// complete (a truncated or corrupt file fails here, naming the member, and
// the Engine never sees it), the archive must name no tag (so that loading
// it tags nothing), and it must hold the image each manifest entry names;
// every blob (blobs/sha256/<hex>) must hash to its name, and each image
// index.json names must be there whole (see vetIndex). The walk reads the
// blobs to hash them and seeks past the rest (a classic-store save's
// layers).
func Read(path string) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening bundle: %w", err)
	}
	defer f.Close()
	m, err := readFrom(f)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return m, nil
}

func readFrom(f *os.File) (*Manifest, error) {
	fs, err := walk(f)
	if err != nil {
		return nil, err
	}
	return fs.bundleManifest()
}

// bundleManifest vets what a pass over a whole archive learnt (no tag, layer
// links to layers) and returns the archive's manifest, which must name
// only images the archive holds.
func (f *facts) bundleManifest() (*Manifest, error) {
	if err := f.vet(); err != nil {
		return nil, err
	}
	if f.manifest == nil {
		return nil, errNoManifest
	}
	m, err := parseManifest(f.manifest)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, img := range m.Images {
		if !f.holds(img) {
			missing = append(missing, fmt.Sprintf("%s: %s", img.Expected, img.describe()))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("its manifest names images the archive does not hold, so nothing is loaded from it:\n  %s", strings.Join(missing, "\n  "))
	}
	return m, nil
}

// walk reads every header of the archive in f, and the content of the
// members that say what it holds.
func walk(f *os.File) (*facts, error) {
	fs := newFacts()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return fs, nil
		}
		if err != nil {
			return nil, truncated(f, afterMember(fs.last), err)
		}
		data, err := fs.content(tr, hdr, true)
		if err != nil {
			return nil, truncated(f, "in member "+hdr.Name, err)
		}
		if err := fs.add(hdr, data); err != nil {
			return nil, err
		}
		if blobHex(hdr) != "" {
			sum, err := copyMember(io.Discard, tr, hdr, data, nil)
			if err != nil {
				return nil, truncated(f, "in member "+hdr.Name, err)
			}
			if err := fs.checkBlob(hdr, sum); err != nil {
				return nil, err
			}
		}
	}
}

func afterMember(name string) string {
	if name == "" {
		return "at its start"
	}
	return "after member " + name
}

// truncated says where an archive stopped making sense.
func truncated(f *os.File, where string, err error) error {
	size := int64(-1)
	if fi, serr := f.Stat(); serr == nil {
		size = fi.Size()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the file is truncated (%d bytes) %s: %w", size, where, err)
	}
	return fmt.Errorf("the file is corrupt %s (%d bytes): %w", where, size, err)
}
