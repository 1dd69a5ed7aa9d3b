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
// Default is the one set of defaults; Parse starts from it and is the one
// validation of the file: it returns every problem (at most MaxProblems
// shown, the rest counted). CheckPasswords and CheckBundles are apart
// because they read other files, as a pull would at that moment, and so
// belong to `prefetch validate`, not to every reload.
//
// The blocks are decoded against hcl.BodySchema by hand rather than into
// gohcl-tagged structs: gohcl evaluates each expression and converts its
// value (the string "2" becomes the number 2, a variable or a function
// call is evaluated), while a value here must be a literal of the exact
// type, so that a file rendered wrong is refused naming the attribute and
// its file:line:col, and nothing in the file is ever evaluated.
//
// It is a package of its own, rather than part of agent/, because `prefetch
// validate` needs it without the Docker client, and because the reload path of
// the daemon swaps whole Config values: parse and validate first, then swap.
//
// It imports nothing of the project's, and every other package may import
// it.
package config
