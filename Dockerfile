# The prefetch and eventlog image: two static binaries, CA certificates and a
# non-root user on an empty base.
#
#   docker build --build-arg VERSION="$(git describe --tags --always --dirty)" -t nomad-prefetch .
#
# Pin the build stage's base by digest for a reproducible build:
#
#   docker build --build-arg GO_IMAGE=golang:1.26@sha256:... .
#
# Every RUN is in exec form: the build stage needs nothing but the Go
# toolchain, not even a shell, so any image holding one will do (CI builds on
# a base made from the machine's own toolchain directory; see
# internal/imagetest).

ARG GO_IMAGE=golang:1.26

FROM ${GO_IMAGE} AS build
# A build argument is in RUN's environment: pass GOPROXY from the host when
# the default proxy is not reachable.
ARG GOPROXY
WORKDIR /src
# The module download is its own layer, rebuilt only when go.mod or go.sum
# change.
COPY go.mod go.sum ./
RUN ["go", "mod", "download"]
COPY . .
ARG VERSION=dev
# go build takes its flags from GOFLAGS too, which is how a build argument
# reaches -ldflags without a shell (GOFLAGS allows quoted values).
ENV CGO_ENABLED=0 GOTOOLCHAIN=local \
    GOFLAGS="-buildvcs=false -trimpath '-ldflags=-s -w -X main.version=${VERSION}'"
RUN ["go", "build", "-o", "/out/", "./cmd/prefetch", "./cmd/eventlog"]

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# root, nobody and nonroot (65532), so that user lookups (the home directory
# holding .docker/config.json) work.
COPY build/rootfs/etc/passwd build/rootfs/etc/group /etc/
COPY --from=build /out/prefetch /out/eventlog /usr/local/bin/
ENV PATH=/usr/local/bin
# prefetch talks to the Docker socket: run it with the socket's group
# (docker run --group-add "$(stat -c %g /var/run/docker.sock)"), not as root.
USER 65532:65532
CMD ["prefetch", "-h"]
