// Package imagetest proves the project's Dockerfile: it builds the image on
// the test bed's private dockerd with the legacy builder, exactly as
// documented (`docker build --build-arg GO_IMAGE=...`), and runs both
// binaries from it, including `prefetch once` against a real registry
// through the daemon's socket, as the image's non-root user with the
// socket's group added.
//
// The test bed cannot pull any public image, so the build stage's base is
// made here: a tarball of this machine's Go toolchain, trimmed to what
// `go build` reads (bin/go, the compiler, assembler and linker, the standard
// library's sources without tests and testdata, pkg/include, go.env,
// VERSION: about 110 MB instead of 270 MB, since the vfs storage driver
// copies a layer's whole tree for every build step), the CA bundle and an
// empty /tmp, imported with `docker import` as local-go:1.26. The build's
// `go mod download` goes through a GOPROXY list that starts with this
// machine's module cache served on 127.0.0.1 (the build runs with host
// networking) and falls back to the host's own GOPROXY; go.sum verifies
// every module either way.
//
// build/rootfs/etc holds the image's /etc/passwd and /etc/group (root, nobody and
// nonroot 65532): the build stage has no shell to write them with.
package imagetest
