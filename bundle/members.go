package bundle

import (
	"archive/tar"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
)

// Member names are read as the Engine's loaders read them, so that what
// prefetch vets is what a load sees. The classic image store's `docker
// load` extracts the archive with filepath.Clean(name) joined to its
// directory, inside a chroot: a leading / is dropped ("/manifest.json" is
// manifest.json), ".." stops at the root ("../manifest.json" is
// manifest.json too), and a symlinked directory is followed ("x/manifest.json"
// behind x -> . is manifest.json); it then opens manifest.json, its configs
// and its layers following symlinks within that directory. So an archive
// that spells a metadata member another way, or reaches it through a link,
// would have the Engine read a manifest (and its RepoTags) that prefetch
// never saw. checkMember refuses every such spelling, and every link but
// the layer links `docker save` writes.

// metadataNames are the members a loader reads to know what an archive
// holds and what to tag: they may only be regular files at the archive's
// root.
var metadataNames = []string{dockerManifestName, indexName, repositoriesName, "oci-layout"}

// checkMember refuses a member whose name or type could make a load read
// something other than what prefetch vets, and returns its name as the
// Engine extracts it.
func checkMember(hdr *tar.Header) (string, error) {
	raw := hdr.Name
	switch {
	case raw == "":
		return "", fmt.Errorf("a member has an empty name")
	case strings.HasPrefix(raw, "/"):
		return "", fmt.Errorf("member %q has an absolute name (the Engine would extract it as %q): docker save writes none", raw, path.Clean(raw)[1:])
	case slices.Contains(strings.Split(raw, "/"), ".."):
		return "", fmt.Errorf("member %q has a .. in its name: docker save writes none, and the Engine would extract it elsewhere than it says", raw)
	}
	name := path.Clean(raw)
	base := path.Base(name)
	if slices.Contains(metadataNames, base) && name != base {
		return "", fmt.Errorf("member %q is named as a load's metadata (%s) but not at the root: it may be a load's metadata only at the archive's root", raw, base)
	}
	if (slices.Contains(metadataNames, name) || name == MemberName) && hdr.Typeflag != tar.TypeReg {
		return "", fmt.Errorf("member %q is not a regular file (%s): a load's metadata must be one", raw, typeName(hdr.Typeflag))
	}
	switch hdr.Typeflag {
	case tar.TypeReg:
	case tar.TypeDir:
		if name == "." {
			return name, nil
		}
	case tar.TypeSymlink:
		if !isLayerLink(name, hdr.Linkname) {
			return "", fmt.Errorf("member %q is a symlink to %q: the only symlinks a bundle may hold are the layer links docker save writes (<id>/layer.tar to ../<id>/layer.tar or ../blobs/sha256/<hex>)", raw, hdr.Linkname)
		}
	case tar.TypeLink:
		return "", fmt.Errorf("member %q is a hard link to %q: docker save writes none", raw, hdr.Linkname)
	default:
		return "", fmt.Errorf("member %q is a %s: a bundle holds only regular files, directories and layer links", raw, typeName(hdr.Typeflag))
	}
	return name, nil
}

// isLayerLink says whether a symlink is one `docker save` writes: a layer
// of the legacy layout, <id>/layer.tar, pointing at a layer saved already,
// ../<id>/layer.tar (Docker 20.10, a layer two images share), or at its
// blob, ../blobs/sha256/<hex> (the legacy layout beside an OCI layout).
// Whether the target is a regular member is vetLinks' to check.
func isLayerLink(name, target string) bool {
	dir, file, ok := strings.Cut(name, "/")
	if !ok || !isHex(dir) || file != "layer.tar" {
		return false
	}
	rest, ok := strings.CutPrefix(target, "../")
	if !ok {
		return false
	}
	if h, ok := strings.CutPrefix(rest, "blobs/sha256/"); ok {
		return isHex(h)
	}
	d, f, ok := strings.Cut(rest, "/")
	return ok && isHex(d) && f == "layer.tar" && d != dir
}

func isHex(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// linkTarget is the member a layer link points at.
func linkTarget(name, target string) string {
	return path.Join(path.Dir(name), target)
}

// vetLinks refuses a layer link whose target is not a regular member of
// the archive (a link to a link, or to nothing), and a member below a
// link (which the Engine would extract through it).
func (f *facts) vetLinks() error {
	links := map[string]bool{}
	for _, l := range f.links {
		links[l] = true
	}
	for _, l := range f.links {
		if t := linkTarget(l, f.targets[l]); !f.regular[t] {
			return fmt.Errorf("member %q is a layer link to %s, which is not a regular member of the archive", l, t)
		}
	}
	if len(links) == 0 {
		return nil
	}
	for _, names := range [][]string{slices.Collect(maps.Keys(f.names)), f.dirs} {
		for _, n := range names {
			for d := path.Dir(n); d != "."; d = path.Dir(d) {
				if links[d] {
					return fmt.Errorf("member %q is below the layer link %s", n, d)
				}
			}
		}
	}
	return nil
}

func typeName(flag byte) string {
	switch flag {
	case tar.TypeReg:
		return "regular file"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar:
		return "character device"
	case tar.TypeBlock:
		return "block device"
	case tar.TypeFifo:
		return "fifo"
	default:
		return fmt.Sprintf("member of type %q", flag)
	}
}
