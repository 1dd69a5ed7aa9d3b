package config

import (
	"fmt"
	"slices"
	"strings"
)

// The platforms registries publish images for, as OCI image indexes name
// them. Written out rather than taken from containerd/platforms because that
// parser accepts any os/arch pair, and a typo here would only show up as a
// failed pull on the node.
var (
	knownOS    = []string{"linux", "windows", "freebsd", "darwin"}
	knownArch  = []string{"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64"}
	archAlias  = map[string]string{"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "i386": "386"}
	knownVaris = map[string][]string{
		"arm":   {"v5", "v6", "v7", "v8"},
		"arm64": {"v8", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v9"},
		"amd64": {"v1", "v2", "v3", "v4"},
	}
)

// normalizePlatform checks an os/arch[/variant] string and returns it in
// canonical form (aarch64 becomes arm64).
func normalizePlatform(s string) (string, error) {
	parts := strings.Split(strings.ToLower(s), "/")
	if len(parts) < 2 || len(parts) > 3 {
		return "", fmt.Errorf("want os/arch or os/arch/variant, such as linux/arm64")
	}
	osName, arch := parts[0], parts[1]
	if !slices.Contains(knownOS, osName) {
		return "", fmt.Errorf("unknown operating system %q (known: %s)", osName, strings.Join(knownOS, ", "))
	}
	if alias, ok := archAlias[arch]; ok {
		arch = alias
	}
	if !slices.Contains(knownArch, arch) {
		return "", fmt.Errorf("unknown architecture %q (known: %s)", arch, strings.Join(knownArch, ", "))
	}
	out := osName + "/" + arch
	if len(parts) == 3 {
		v := parts[2]
		if !slices.Contains(knownVaris[arch], v) {
			if len(knownVaris[arch]) == 0 {
				return "", fmt.Errorf("architecture %s has no variants", arch)
			}
			return "", fmt.Errorf("unknown variant %q for %s (known: %s)", v, arch, strings.Join(knownVaris[arch], ", "))
		}
		out += "/" + v
	}
	return out, nil
}
