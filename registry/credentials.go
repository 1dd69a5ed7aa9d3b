package registry

import (
	"fmt"
	"sync"

	cliconfig "github.com/docker/cli/cli/config"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
)

// Auth is the credentials the operator gave for one registry host (the
// config's auth block).
type Auth struct {
	// Host is the registry host as it appears in references (docker.io for
	// Docker Hub).
	Host     string
	Username string
	// Password returns the password or token; it is called at each use, so
	// a rotated secret is picked up, and its error must name the host.
	Password func() (string, error)
}

// Credentials resolves the credentials for a registry host, in this order:
// the config file's auth block for that host, then the Docker config of the
// user running prefetch (credHelpers, credsStore, auths; DOCKER_AUTH_CONFIG
// too), exactly as `docker pull` would. The Docker config is read at each
// lookup, so a `docker login` on the node takes effect without a restart.
//
// Nothing here logs, and errors never carry a secret.
type Credentials struct {
	mu    sync.RWMutex
	auths map[string]Auth
	// dockerConfigDir is the directory holding config.json; empty means
	// DOCKER_CONFIG, then ~/.docker.
	dockerConfigDir string
}

// NewCredentials returns a resolver over the config's auth blocks and the
// Docker config in dockerConfigDir (empty: DOCKER_CONFIG, then ~/.docker).
func NewCredentials(auths []Auth, dockerConfigDir string) *Credentials {
	c := &Credentials{dockerConfigDir: dockerConfigDir}
	c.SetAuths(auths)
	return c
}

// SetAuths replaces the config's auth blocks, as a reloaded config does:
// lookups from then on use the new ones.
func (c *Credentials) SetAuths(auths []Auth) {
	m := make(map[string]Auth, len(auths))
	for _, a := range auths {
		m[a.Host] = a
	}
	c.mu.Lock()
	c.auths = m
	c.mu.Unlock()
}

// Lookup returns the credentials for host; the zero AuthConfig when there are
// none (an anonymous pull).
func (c *Credentials) Lookup(host string) (registry.AuthConfig, error) {
	c.mu.RLock()
	a, ok := c.auths[host]
	c.mu.RUnlock()
	if ok {
		pw, err := a.Password()
		if err != nil {
			return registry.AuthConfig{}, err
		}
		return registry.AuthConfig{Username: a.Username, Password: pw, ServerAddress: host}, nil
	}
	cf, err := cliconfig.Load(c.dockerConfigDir)
	if err != nil {
		return registry.AuthConfig{}, fmt.Errorf("loading Docker config: %w", err)
	}
	ac, err := cf.GetAuthConfig(host)
	if err != nil {
		return registry.AuthConfig{}, fmt.Errorf("getting credentials for %s from the Docker config %s: %w", host, cf.Filename, err)
	}
	return registry.AuthConfig{
		Username:      ac.Username,
		Password:      ac.Password,
		Auth:          ac.Auth,
		ServerAddress: ac.ServerAddress,
		IdentityToken: ac.IdentityToken,
		RegistryToken: ac.RegistryToken,
	}, nil
}

// header returns the X-Registry-Auth value for pulling ref: empty for an
// anonymous pull.
func (c *Credentials) header(ref string) (string, error) {
	if c == nil {
		return "", nil
	}
	host, err := Host(ref)
	if err != nil {
		return "", err
	}
	ac, err := c.Lookup(host)
	if err != nil {
		return "", err
	}
	if ac == (registry.AuthConfig{}) {
		return "", nil
	}
	return authconfig.Encode(ac)
}
