package bundle

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Stream makes the image of the one-image bundle read from r (a peer's
// transfer, as a Server's bundle.Stream writes it) present in Docker for
// expected, pinned to dgst when set, and returns its ID, which must be want
// when want is set (the ID the sender announced). It tags nothing.
//
// The archive reaches the Engine as it is read, so that the load runs while
// the transfer comes, and nothing is kept on disk; the checks Image makes of
// a file are made on the way. Each member is checked as it comes
// (checkMember, before the Engine sees its header); the members a load
// reads to know what an archive holds and what to tag (manifest.json,
// index.json, repositories, oci-layout, the bundle's manifest) and the layer
// links are held back until the whole archive has been read and vetted (no
// tag, the bundle's manifest naming expected under want and the archive
// holding it, a digest pin proven by the blobs it sent), and only then sent
// with the archive's end. Until that end the Engine has an unfinished
// archive, which it extracts and does not yet load; anything refused cuts
// its load short with an error, so that nothing of it is loaded. What a
// load added and is refused after all (the Engine computed another ID than
// the one named) is removed again, as Image removes it.
//
// The archive must be all r holds, but padding (r is read to its end
// before the Engine has the archive's end), and r must end, or fail, when
// ctx is done.
func (l *Loader) Stream(ctx context.Context, r io.Reader, expected, dgst, want string, opts registry.ArchiveOptions) (string, error) {
	before, err := l.engine.ImageIDs(ctx)
	if err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	type outcome struct {
		res registry.LoadResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := l.engine.Load(ctx, pr, opts, nil)
		pr.CloseWithError(errEngineDone) // the relay's writes fail from here on
		done <- outcome{res, err}
	}()
	img, proved, rerr := relay(r, pw, expected, dgst, want)
	pw.CloseWithError(rerr) // nil: the archive's end, and the Engine loads it
	out := <-done
	bf := &bundleFile{fileData: fileData{fresh: added(before, out.res)}}
	log := l.log.With("image", expected)
	refuse := func(err error) (string, error) { // what the load added goes
		l.discardFresh(ctx, log, bf, nil)
		return "", err
	}
	switch {
	case rerr != nil && !errors.Is(rerr, errEngineDone):
		return refuse(rerr)
	case out.err != nil:
		return refuse(fmt.Errorf("the Docker Engine refused it: %w", out.err))
	case rerr != nil:
		return refuse(errors.New("the Docker Engine ended the load before the archive's end"))
	}
	verified, err := verify(&Manifest{Images: []Image{img}}, out.res)
	if err != nil {
		return refuse(err)
	}
	id := verified[expected]
	switch {
	case want != "" && id != want:
		return refuse(fmt.Errorf("it was announced as image %s and the Engine loaded %s", want, id))
	case dgst != "" && !slices.Contains(proved, id):
		return refuse(unproven(dgst, fmt.Errorf("the Engine loaded it as %s, which blob %s does not lead to (it leads to %s)", id, dgst, strings.Join(proved, ", "))))
	}
	l.discardFresh(ctx, log, bf, func(loaded string) bool { return loaded == id })
	return id, nil
}

// errEngineDone is what the relay's writes meet once the Engine's load has
// ended: the Engine's own error says why.
var errEngineDone = errors.New("the Docker Engine's load ended")

// relay copies the tar archive read from r to w member by member, each
// checked as walk checks a file's, holding back the metadata members and
// the layer links (see Stream); once the archive has been read whole and
// what it holds vetted, it writes them and the archive's end. It returns
// the bundle's image for expected and, with dgst, the IDs its blobs prove
// to be dgst.
func relay(r io.Reader, w io.Writer, expected, dgst, want string) (Image, []string, error) {
	f := newFacts()
	tr, tw := tar.NewReader(r), tar.NewWriter(w)
	type member struct {
		hdr  *tar.Header
		data []byte
	}
	var held []member
	buf := make([]byte, 256<<10)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Image{}, nil, cut(afterMember(f.last), err)
		}
		data, err := f.content(tr, hdr, true)
		if err != nil {
			return Image{}, nil, cut("in member "+hdr.Name, err)
		}
		if err := f.add(hdr, data); err != nil {
			return Image{}, nil, err
		}
		// The header as the Engine will read it: what was checked, and
		// nothing more (no PAX records of the sender's).
		out := &tar.Header{Typeflag: hdr.Typeflag, Name: hdr.Name, Linkname: hdr.Linkname, Size: hdr.Size, Mode: hdr.Mode, ModTime: hdr.ModTime}
		if name := path.Clean(hdr.Name); hdr.Typeflag == tar.TypeSymlink || slices.Contains(metadataNames, name) || name == MemberName {
			if data == nil && hdr.Typeflag == tar.TypeReg { // oci-layout, which is not vetted: held all the same
				if data, err = readMember(tr, hdr, maxMeta); err != nil {
					return Image{}, nil, cut("in member "+hdr.Name, err)
				}
			}
			held = append(held, member{out, data})
			continue
		}
		if err := tw.WriteHeader(out); err != nil {
			return Image{}, nil, err
		}
		sum, err := copyMember(tw, tr, hdr, data, buf)
		if err != nil && !errors.Is(err, errEngineDone) {
			err = cut("in member "+hdr.Name, err)
		}
		if err != nil {
			return Image{}, nil, err
		}
		if sum != nil {
			// Already on its way to the Engine: a blob that is not what
			// its name says ends the load before the metadata goes.
			if err := f.checkBlob(hdr, sum); err != nil {
				return Image{}, nil, err
			}
		}
	}
	// The archive is the whole stream: read it to its end (the reader's
	// end is the transfer's), allowing the zero blocks a tar writer may pad
	// it with.
	if rest, err := io.Copy(io.Discard, io.LimitReader(r, maxPadding+1)); err != nil {
		return Image{}, nil, cut("after the archive's end", err)
	} else if rest > maxPadding {
		return Image{}, nil, fmt.Errorf("more than %d bytes follow the archive's end: a transfer is one archive", maxPadding)
	}
	m, err := f.bundleManifest()
	if err != nil {
		return Image{}, nil, err
	}
	if len(m.Images) != 1 {
		return Image{}, nil, fmt.Errorf("its manifest names %d images, where a transfer holds one", len(m.Images))
	}
	img, err := imageFor(m, expected, dgst)
	if err != nil {
		return Image{}, nil, err
	}
	if want != "" && !slices.Contains(img.IDs(), want) {
		return Image{}, nil, fmt.Errorf("it was announced as image %s and its manifest names %s", want, img.describe())
	}
	var proved []string
	if dgst != "" {
		ids, perr := prove(dgst, f.keptBlobs)
		if proved, err = proves(dgst, img, ids, perr); err != nil {
			return Image{}, nil, err
		}
	}
	for _, h := range held {
		if err := tw.WriteHeader(h.hdr); err != nil {
			return Image{}, nil, err
		}
		if _, err := tw.Write(h.data); err != nil {
			return Image{}, nil, err
		}
	}
	return img, proved, tw.Close()
}

// maxPadding bounds what may follow a streamed archive's end: a tar
// writer's padding to its record size (10 KiB by default).
const maxPadding = 10 << 10

// cut says where a streamed archive stopped making sense.
func cut(where string, err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("the archive is cut short %s: %w", where, err)
	}
	return fmt.Errorf("the archive can't be read %s: %w", where, err)
}
