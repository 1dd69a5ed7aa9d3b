// Package tartest rewrites tar archives for tests: a bundle or a transfer
// made hostile in the ways the code under test must refuse, still well
// formed (each member's header written anew, its size its new content's).
package tartest

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
)

// Rewrite returns archive copied member by member through edit, which gets
// each member's name and content and returns them as they are to be.
func Rewrite(t testing.TB, archive []byte, edit func(name string, data []byte) (string, []byte)) []byte {
	t.Helper()
	var out bytes.Buffer
	tr, tw := tar.NewReader(bytes.NewReader(archive)), tar.NewWriter(&out)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdr.Name, data = edit(hdr.Name, data)
		hdr.Size = int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}
