package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"
)

// The members of a `docker save` archive that say what it holds and what a
// load would tag, in both formats: Docker 20.10's (manifest.json, configs
// as <hex>.json, layers as <id>/layer.tar, a repositories file when tags
// were saved) and the OCI layout of Docker 25 and later (index.json,
// blobs/sha256/<hex>, and manifest.json too).
const (
	dockerManifestName = "manifest.json"
	indexName          = "index.json"
	repositoriesName   = "repositories"
	// maxMeta bounds each of those members, as containerd's importer does.
	maxMeta = 20 << 20
	// maxBlobJSON bounds a blob kept to find an image's config (a manifest
	// or an index), and maxBlobsJSON all of them together: the writer
	// holds no layer, whatever the bundle's size.
	maxBlobJSON  = 4 << 20
	maxBlobsJSON = 32 << 20
)

// dockerItem is one entry of manifest.json.
type dockerItem struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// ociIndex is what is needed of index.json, or of an index or manifest
// blob.
type ociIndex struct {
	Manifests []ociDescriptor `json:"manifests"`
	Config    *ociDescriptor  `json:"config"`
}

type ociDescriptor struct {
	Digest      string            `json:"digest"`
	Annotations map[string]string `json:"annotations"`
	Platform    *struct {
		OS string `json:"os"`
	} `json:"platform"`
}

// facts is what one pass over an archive learnt: every member's name, the
// metadata members, and (for the writer) the small JSON blobs.
type facts struct {
	names        map[string]bool   // every member but directories
	regular      map[string]bool   // the regular files among them
	links        []string          // the layer links among them
	targets      map[string]string // link → its target, as written
	dirs         []string
	docker       []dockerItem
	index        *ociIndex
	repositories []byte
	manifest     []byte // ours
	blobs        map[string][]byte
	blobsSize    int64
	hashed       map[string]bool // blobs/sha256/<hex> members read and found to hash to <hex>
	last         string          // the last member's name, for messages
}

func newFacts() *facts {
	return &facts{names: map[string]bool{}, regular: map[string]bool{}, targets: map[string]string{}, blobs: map[string][]byte{}, hashed: map[string]bool{}}
}

// wants says whether a member's content must be read: the metadata
// members always, small blobs that may be JSON when keepBlobs.
func (f *facts) wants(hdr *tar.Header, keepBlobs bool) bool {
	if hdr.Typeflag != tar.TypeReg {
		return false
	}
	name := path.Clean("/" + hdr.Name)[1:]
	switch name {
	case dockerManifestName, indexName, repositoriesName, MemberName:
		return true
	}
	return keepBlobs && strings.HasPrefix(name, "blobs/sha256/") && hdr.Size <= maxBlobJSON &&
		f.blobsSize+hdr.Size <= maxBlobsJSON
}

// content reads a member's content when f wants it (nil when it does not),
// bounded as the member's kind is.
func (f *facts) content(r io.Reader, hdr *tar.Header, keepBlobs bool) ([]byte, error) {
	if !f.wants(hdr, keepBlobs) {
		return nil, nil
	}
	limit := int64(maxMeta)
	if path.Clean(hdr.Name) == MemberName {
		limit = maxManifest
	}
	return readMember(r, hdr, limit)
}

// blobHex is the <hex> of a member named blobs/sha256/<hex>, "" for any
// other.
func blobHex(hdr *tar.Header) string {
	h, ok := strings.CutPrefix(path.Clean(hdr.Name), "blobs/sha256/")
	if !ok || hdr.Typeflag != tar.TypeReg || !isHex(h) {
		return ""
	}
	return h
}

// copyMember writes the content of the member hdr to w: data when the pass
// kept it, else what r holds of it (through buf). For a blob it returns the
// content's SHA-256, for checkBlob; nil for any other member.
func copyMember(w io.Writer, r io.Reader, hdr *tar.Header, data, buf []byte) ([]byte, error) {
	if blobHex(hdr) == "" {
		if data != nil {
			_, err := w.Write(data)
			return nil, err
		}
		_, err := io.CopyBuffer(w, r, buf)
		return nil, err
	}
	h := sha256.New()
	var err error
	if data != nil {
		h.Write(data)
		_, err = w.Write(data)
	} else {
		_, err = io.CopyBuffer(w, io.TeeReader(r, h), buf)
	}
	return h.Sum(nil), err
}

// checkBlob refuses a blob member whose content (sum, its SHA-256) is not
// what its name says, and records one that is. The containerd image store
// takes the digests index.json names on trust and stores each blob under
// the digest it computes, so a blob under another's name would leave an
// image naming content that is not there.
func (f *facts) checkBlob(hdr *tar.Header, sum []byte) error {
	h := blobHex(hdr)
	if got := fmt.Sprintf("%x", sum); got != h {
		return fmt.Errorf("member %q is not blob sha256:%s: it does not hash to its name (its content is sha256:%s)", hdr.Name, h, got)
	}
	f.hashed[h] = true
	return nil
}

// add records a member, after checkMember. data is its content when wants
// said so.
func (f *facts) add(hdr *tar.Header, data []byte) error {
	f.last = hdr.Name
	name, err := checkMember(hdr)
	if err != nil {
		return err
	}
	if hdr.Typeflag == tar.TypeDir {
		f.dirs = append(f.dirs, name)
		return nil
	}
	if f.names[name] {
		return fmt.Errorf("member %q appears twice", hdr.Name)
	}
	f.names[name] = true
	if hdr.Typeflag == tar.TypeSymlink {
		f.links = append(f.links, name)
		f.targets[name] = hdr.Linkname
		return nil
	}
	f.regular[name] = true
	switch name {
	case dockerManifestName:
		err = json.Unmarshal(data, &f.docker)
	case indexName:
		f.index = &ociIndex{}
		err = json.Unmarshal(data, f.index)
	case repositoriesName:
		f.repositories = data
	case MemberName:
		f.manifest = data
	default:
		if data != nil && manifestLike(data) {
			f.blobs["sha256:"+path.Base(name)] = data
			f.blobsSize += int64(len(data))
		}
	}
	if err != nil {
		return fmt.Errorf("decoding member %q: %w", hdr.Name, err)
	}
	return nil
}

// manifestLike says whether a blob read is an image manifest or an index
// (what vetIndex, configOf and a digest pin's proof read), rather than an
// image config or a layer: only those are kept, so that the budget of
// kept blobs (maxBlobsJSON) is not spent on configs, which are larger.
func manifestLike(data []byte) bool {
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		return false
	}
	var m struct {
		Layers    json.RawMessage `json:"layers"`
		Manifests json.RawMessage `json:"manifests"`
	}
	return json.Unmarshal(data, &m) == nil && (m.Layers != nil || m.Manifests != nil)
}

// readMember reads a member's content, refusing one larger than limit.
func readMember(r io.Reader, hdr *tar.Header, limit int64) ([]byte, error) {
	if hdr.Size > limit {
		return nil, fmt.Errorf("member %q is %d bytes, more than the %d it may be", hdr.Name, hdr.Size, limit)
	}
	data := make([]byte, hdr.Size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("reading member %q: %w", hdr.Name, err)
	}
	return data, nil
}

// tags lists what loading the archive would tag: a prefetch bundle names
// none, so that a load never moves a tag on the node.
func (f *facts) tags() []string {
	var out []string
	for _, it := range f.docker {
		out = append(out, it.RepoTags...)
	}
	if len(bytes.TrimSpace(f.repositories)) > 0 {
		var repos map[string]map[string]string
		if err := json.Unmarshal(f.repositories, &repos); err != nil || len(repos) > 0 {
			out = append(out, "(the repositories file names tags)")
		}
	}
	if f.index != nil {
		for _, d := range f.index.Manifests {
			for _, key := range []string{"io.containerd.image.name", "org.opencontainers.image.ref.name"} {
				if v := d.Annotations[key]; v != "" {
					out = append(out, v)
				}
			}
		}
	}
	return out
}

// holds reports whether the archive holds img's content under the ID the
// manifest names: as its config (<hex>.json, blobs/sha256/<hex>) for the
// classic store's kind, as a manifest or index blob for the containerd
// store's.
func (f *facts) holds(img Image) bool {
	h := hexOf(img.ImageID)
	if h == "" {
		return false
	}
	if f.regular["blobs/sha256/"+h] {
		return true
	}
	return img.IDKind == KindConfig && f.regular[h+".json"]
}

// identify says what the ID of an image the writer's daemon saved is in
// this archive: the config of an entry of manifest.json (the classic
// store), or an entry of index.json (the containerd store), whose config
// is then looked up in the blobs kept.
func (f *facts) identify(id string) (kind, config string, err error) {
	h := hexOf(id)
	for _, it := range f.docker {
		if c := path.Base(it.Config); h != "" && (c == h+".json" || c == h) {
			return KindConfig, id, nil
		}
	}
	if f.index != nil && slices.ContainsFunc(f.index.Manifests, func(d ociDescriptor) bool { return d.Digest == id }) {
		return KindManifest, f.configOf(id, 0), nil
	}
	return "", "", fmt.Errorf("the Engine's archive does not hold image %s (neither a config in manifest.json nor an entry of index.json)", id)
}

// configOf is the config digest of the manifest dgst, or of the one image
// manifest of the index dgst that the archive holds (attestations aside);
// "" when that is not one config.
func (f *facts) configOf(dgst string, depth int) string {
	data, ok := f.blobs[dgst]
	if !ok || depth > 2 {
		return ""
	}
	var m ociIndex
	if json.Unmarshal(data, &m) != nil {
		return ""
	}
	if m.Config != nil {
		return m.Config.Digest
	}
	var held []string
	for _, d := range m.Manifests {
		attestation := d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" ||
			(d.Platform != nil && d.Platform.OS == "unknown")
		if !attestation && f.regular["blobs/sha256/"+hexOf(d.Digest)] {
			held = append(held, d.Digest)
		}
	}
	if len(held) != 1 {
		return ""
	}
	return f.configOf(held[0], depth+1)
}

// vet refuses an archive whose load would tag something, whose layer
// links lead nowhere a layer is, or whose index.json names an image the
// archive does not hold whole.
func (f *facts) vet() error {
	if err := f.vetLinks(); err != nil {
		return err
	}
	if tags := f.tags(); len(tags) > 0 {
		return fmt.Errorf("loading it would tag %s: a bundle must name no tag (prefetch saves images by ID, so that loading one never moves a tag)", strings.Join(tags, ", "))
	}
	return f.vetIndex()
}

var errNoManifest = errors.New("it has no " + MemberName + " (the last member prefetch bundle writes): truncated, or not a prefetch bundle")

// vetIndex refuses an OCI layout whose index.json names an image that the
// archive does not hold whole: each manifest it names (through an index,
// the ones the archive holds, one at least) with its config and every
// layer, each a blob that was read and hashes to its name. The containerd
// image store creates an image for each descriptor of index.json without
// checking that its content came: a load of such an archive reports an ID
// whose content is missing.
func (f *facts) vetIndex() error {
	if f.index == nil {
		return nil
	}
	for _, d := range f.index.Manifests {
		if err := f.whole(d.Digest, 0); err != nil {
			return fmt.Errorf("index.json names %s, which the archive does not hold whole: %w", d.Digest, err)
		}
	}
	return nil
}

// whole checks that the blob dgst, and what it names, is in the archive:
// see vetIndex.
func (f *facts) whole(dgst string, depth int) error {
	h := hexOf(dgst)
	switch {
	case !isHex(h) || !f.hashed[h]:
		return fmt.Errorf("no blob %s", dgst)
	case depth > 2:
		return errors.New("indexes nested too deep")
	}
	data, ok := f.blobs[dgst]
	if !ok {
		return fmt.Errorf("blob %s is not a manifest or an index this reader can read (larger than %d bytes, or past the %d kept)", dgst, maxBlobJSON, maxBlobsJSON)
	}
	var m struct {
		Config    *ociDescriptor  `json:"config"`
		Layers    []ociDescriptor `json:"layers"`
		Manifests []ociDescriptor `json:"manifests"`
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("blob %s: %w", dgst, err)
	}
	if m.Config == nil {
		held := 0
		for _, c := range m.Manifests {
			if !f.hashed[hexOf(c.Digest)] {
				continue // a platform the archive does not hold
			}
			if err := f.whole(c.Digest, depth+1); err != nil {
				return err
			}
			held++
		}
		if held == 0 {
			return fmt.Errorf("the index %s has none of its manifests in the archive", dgst)
		}
		return nil
	}
	for _, c := range append([]ociDescriptor{*m.Config}, m.Layers...) {
		if !f.hashed[hexOf(c.Digest)] {
			return fmt.Errorf("the manifest %s names %s, which the archive does not hold", dgst, c.Digest)
		}
	}
	return nil
}
