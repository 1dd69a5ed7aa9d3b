package testbed

import (
	"archive/tar"
	"crypto/sha256"
	"io"
	"time"
)

// writeLayer writes a tar holding one file, /seed, of size bytes derived from
// seed: the same seed always gives the same bytes, another seed other bytes.
func writeLayer(w io.Writer, seed string, size int) error {
	data := make([]byte, 0, size+sha256.Size)
	block := sha256.Sum256([]byte(seed))
	for len(data) < size {
		data = append(data, block[:]...)
		block = sha256.Sum256(block[:])
	}
	data = data[:size]
	tw := tar.NewWriter(w)
	hdr := &tar.Header{Name: "seed", Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	return tw.Close()
}
