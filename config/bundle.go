package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// BundlePrefix starts a source that is a bundle file (written by `prefetch
// bundle`) rather than a registry reference: "bundle:/bootstrap/b.tar".
const BundlePrefix = "bundle:"

// BundlePath returns the file a bundle source names, and whether src is
// one.
func BundlePath(src string) (string, bool) {
	return strings.CutPrefix(src, BundlePrefix)
}

// bundleSource checks a bundle source and returns it normalised: an
// absolute path (the agent's working directory is a Nomad task's, not the
// operator's), cleaned.
func bundleSource(s string) (string, error) {
	p, _ := BundlePath(s)
	switch {
	case strings.TrimSpace(p) == "":
		return "", errors.New("names no file (want bundle:/absolute/path/bootstrap.tar)")
	case !filepath.IsAbs(p):
		return "", fmt.Errorf("path %q is not absolute (want bundle:/absolute/path/bootstrap.tar): the agent's working directory is not yours", p)
	case strings.HasSuffix(p, "/"):
		return "", fmt.Errorf("path %q names a directory, not a bundle file", p)
	}
	return BundlePrefix + filepath.Clean(p), nil
}

// elementRange is where the i-th element of a list attribute is, for an
// error about that element alone; the whole list when it is not written as
// a literal list.
func elementRange(a *hcl.Attribute, i int) hcl.Range {
	if t, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok && i < len(t.Exprs) {
		return t.Exprs[i].Range()
	}
	return a.Expr.Range()
}

// CheckBundles reads each bundle source's file as a load would find it,
// here and now, and returns a warning, at the image block, for each that
// can't be had: validate reports them as warnings, since the agent may run
// with other mounts than the shell that validates.
func (c Config) CheckBundles() []Problem {
	var warns []Problem
	for _, img := range c.Images {
		for _, src := range img.Sources {
			p, ok := BundlePath(src)
			if !ok {
				continue
			}
			f, err := os.Open(p)
			if err == nil {
				var fi os.FileInfo
				if fi, err = f.Stat(); err == nil && !fi.Mode().IsRegular() {
					err = errors.New("not a regular file")
				}
				f.Close()
			}
			if err != nil {
				warns = append(warns, Problem{Pos: img.Pos, Msg: clip(fmt.Sprintf("image %q: bundle %s can't be read here (%v); the image can't come from it until it can", img.Name, p, err))})
			}
		}
	}
	return capProblems(c.File, warns, "warnings")
}
