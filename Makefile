VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)

.PHONY: build test lint try clean

## build: static binaries in bin/
build:
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

## test: every test, against the real dockerd and registries the tests start (needs root)
test:
	./scripts/test.sh

## lint: go vet, staticcheck (scripts/deps.sh test installs it) and gofmt
lint:
	go vet ./...
	"$$(go env GOPATH)/bin/staticcheck" ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }

## try: the try-out (needs root)
try:
	./scripts/try.sh

clean:
	rm -rf bin
