// Package config owns prefetch's configuration file: the HCL it accepts, the
// value structs it is decoded into, its defaults and its validation.
//
// The file is parsed once into plain value structs (no pointers, no merge
// logic). Every problem is collected with its file:line:col, so an operator
// fixing a config rendered by consul-template sees all of them at once rather
// than one per attempt. Image references are normalised here, at load
// (`traefik:v3` becomes `docker.io/library/traefik:v3`), so the rest of the
// program compares references as plain strings.
//
// It is a package of its own, rather than part of agent/, because `prefetch
// validate` needs it without the Docker client, and because the reload path of
// the daemon swaps whole Config values: parse and validate first, then swap.
//
// It imports nothing of the project's, and every other package may import
// it.
package config
