package agent

import (
	"os"
	"time"

	"github.com/nomad-prefetch/nomad-prefetch/config"
	"github.com/nomad-prefetch/nomad-prefetch/registry"
)

// Clients are what a config names to talk to: the Docker Engine, the
// registries (for manifest HEADs), and the credentials both use.
type Clients struct {
	Engine      *registry.Engine
	Remote      *registry.Remote
	Credentials *registry.Credentials
}

// NewClients makes the clients cfg names: the Engine at cfg.Docker.Host,
// whose calls but a pull's stream are bounded by callTimeout (zero: the
// default), and credentials from cfg's auth blocks (SetAuths replaces them
// on a reload), then DOCKER_CONFIG or ~/.docker/config.json. Nothing is
// dialled yet.
func NewClients(cfg config.Config, callTimeout time.Duration) (Clients, error) {
	creds := registry.NewCredentials(RegistryAuths(cfg.Auths), os.Getenv("DOCKER_CONFIG"))
	engine, err := registry.NewEngine(registry.Options{Host: cfg.Docker.Host, Credentials: creds, CallTimeout: callTimeout})
	if err != nil {
		return Clients{}, err
	}
	return Clients{Engine: engine, Remote: &registry.Remote{Credentials: creds, Insecure: engine.Insecure}, Credentials: creds}, nil
}

// RegistryAuths are the config's auth blocks as the registry package takes
// them; each password is read at each use.
func RegistryAuths(auths []config.Auth) []registry.Auth {
	out := make([]registry.Auth, 0, len(auths))
	for _, a := range auths {
		out = append(out, registry.Auth{Host: a.Host, Username: a.Username, Password: a.Password})
	}
	return out
}
