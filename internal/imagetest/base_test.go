package imagetest

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// goEnv is the host's Go environment the build base and proxy come from.
type goEnv struct {
	GOROOT, GOMODCACHE, GOPROXY string
}

func hostGoEnv(t *testing.T) goEnv {
	t.Helper()
	out, err := exec.Command("go", "env", "-json", "GOROOT", "GOMODCACHE", "GOPROXY").Output()
	if err != nil {
		t.Fatalf("go env: %v", err)
	}
	var env goEnv
	if err := json.Unmarshal(out, &env); err != nil {
		t.Fatalf("go env: %v", err)
	}
	return env
}

// toolchainFile says whether rel, a slash-separated path inside GOROOT, is
// needed by `go mod download` and `go build` of this module.
func toolchainFile(rel string, isDir bool) bool {
	tool := "pkg/tool/" + runtime.GOOS + "_" + runtime.GOARCH + "/"
	switch {
	case rel == "bin/go", rel == "go.env", rel == "VERSION":
		return true
	case rel == "bin", rel == "pkg", rel == strings.TrimSuffix(tool, "/"), rel == "pkg/tool":
		return isDir
	case strings.HasPrefix(rel, tool):
		name := strings.TrimPrefix(rel, tool)
		return name == "compile" || name == "link" || name == "asm"
	case rel == "pkg/include", strings.HasPrefix(rel, "pkg/include/"):
		return true
	case rel == "src":
		return true
	case strings.HasPrefix(rel, "src/"):
		if rel == "src/cmd" || path.Base(rel) == "testdata" {
			return false
		}
		return isDir || !strings.HasSuffix(rel, "_test.go")
	}
	return false
}

// writeBase writes the build base's root filesystem as a tar: the trimmed
// toolchain at usr/local/go, the CA bundle and /tmp.
func writeBase(w io.Writer, goroot string) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	for _, dir := range []string{"etc/", "etc/ssl/", "etc/ssl/certs/", "usr/", "usr/local/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: epoch}); err != nil {
		return err
	}
	if err := addFile(tw, "/etc/ssl/certs/ca-certificates.crt", "etc/ssl/certs/ca-certificates.crt"); err != nil {
		return err
	}
	err := filepath.WalkDir(goroot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(goroot, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		name := "usr/local/go"
		if rel != "." {
			if !toolchainFile(rel, d.IsDir()) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			name += "/" + rel
		}
		return addFile(tw, p, name)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// addFile adds the file, directory or symlink at src to tw as name.
func addFile(tw *tar.Writer, src, name string) error {
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	link := ""
	if fi.Mode()&fs.ModeSymlink != 0 {
		if link, err = os.Readlink(src); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	if fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return nil
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

// importBase makes the build stage's base image, ref, from the host's Go
// toolchain, as CI documents it: docker import with PATH and GOTOOLCHAIN.
func importBase(ctx context.Context, t *testing.T, ref string, env goEnv) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeBase(pw, env.GOROOT)) }()
	defer pr.Close()
	resp, err := bed.Client.ImageImport(ctx, client.ImageImportSource{Source: pr, SourceName: "-"}, ref, client.ImageImportOptions{
		Changes: []string{
			"ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"ENV GOTOOLCHAIN=local",
			"ENV GOPATH=/go",
		},
	})
	if err != nil {
		t.Fatalf("importing %s: %v", ref, err)
	}
	defer resp.Close()
	var msg struct{ Status, Error string }
	dec := json.NewDecoder(resp)
	for dec.More() {
		if err := dec.Decode(&msg); err != nil {
			t.Fatalf("importing %s: %v", ref, err)
		}
		if msg.Error != "" {
			t.Fatalf("importing %s: %s", ref, msg.Error)
		}
	}
}

// moduleProxy serves the host's module cache, which is laid out as a
// GOPROXY, on 127.0.0.1 and returns the GOPROXY list for the build (that
// server first, then the host's own) and a report of what it served.
func moduleProxy(t *testing.T, env goEnv) (goproxy string, served func() string) {
	t.Helper()
	var hits, misses atomic.Int64
	files := http.FileServer(http.Dir(filepath.Join(env.GOMODCACHE, "cache", "download")))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		files.ServeHTTP(rec, r)
		if rec.status == http.StatusOK {
			hits.Add(1)
		} else {
			misses.Add(1)
		}
	}))
	t.Cleanup(srv.Close)
	return fmt.Sprintf("%s,%s", srv.URL, env.GOPROXY), func() string {
		return fmt.Sprintf("%d module files from the host's cache, %d left to %s", hits.Load(), misses.Load(), env.GOPROXY)
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}
