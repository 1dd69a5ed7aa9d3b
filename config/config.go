package config

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// Defaults for the optional top-level settings.
const (
	DefaultConcurrency  = 2
	DefaultPullTimeout  = 10 * time.Minute
	DefaultStallTimeout = 2 * time.Minute

	// The daemon's schedule (prefetch run).
	DefaultResyncInterval = 10 * time.Minute
	DefaultRetryInitial   = 10 * time.Second
	DefaultRetryMax       = 10 * time.Minute
	DefaultAlertAfter     = 6 * time.Hour
)

// Default is the configuration a file with no top-level settings gives:
// the one place the defaults are put together (Parse starts from it, and so
// does `prefetch once -bundle` without a file). file is the file it stands
// for, in messages.
func Default(file string) Config {
	return Config{
		File:         file,
		Concurrency:  DefaultConcurrency,
		PullTimeout:  DefaultPullTimeout,
		StallTimeout: DefaultStallTimeout,

		ResyncInterval: DefaultResyncInterval,
		RetryInitial:   DefaultRetryInitial,
		RetryMax:       DefaultRetryMax,
		AlertAfter:     DefaultAlertAfter,
	}
}

// The bounds of the top-level numbers: outside them a setting is a mistake,
// not a choice. Below a floor a failing image is retried, or a present one
// checked again, so often that dockerd and the registries see hundreds of
// requests a second, or a pull is cut off before any layer can arrive;
// above a ceiling the setting no longer does its job. docs/configuration.md
// lists the same bounds (TestConfigurationDocMatchesBounds checks it).
const (
	MinConcurrency = 1
	MaxConcurrency = 64
)

// durationLimits are the durations' bounds, one row each: the only place
// they are written down.
var durationLimits = []struct {
	name     string
	min, max time.Duration
	field    func(*Config) *time.Duration
}{
	{"pull_timeout", 10 * time.Second, 24 * time.Hour, func(c *Config) *time.Duration { return &c.PullTimeout }},
	{"stall_timeout", 5 * time.Second, time.Hour, func(c *Config) *time.Duration { return &c.StallTimeout }},
	{"resync_interval", time.Minute, 168 * time.Hour, func(c *Config) *time.Duration { return &c.ResyncInterval }},
	{"retry_initial", 100 * time.Millisecond, time.Hour, func(c *Config) *time.Duration { return &c.RetryInitial }},
	{"retry_max", time.Second, 24 * time.Hour, func(c *Config) *time.Duration { return &c.RetryMax }},
	{"alert_after", time.Minute, 720 * time.Hour, func(c *Config) *time.Duration { return &c.AlertAfter }},
}

// Config is one parsed and validated configuration file.
type Config struct {
	// File is the name the configuration was parsed from.
	File   string
	Docker Docker
	// Concurrency bounds how many images are pulled at once.
	Concurrency int
	// PullTimeout bounds one pull of one reference.
	PullTimeout time.Duration
	// StallTimeout cancels a pull whose progress stream has been silent that
	// long (a registry that stopped sending a blob without closing).
	StallTimeout time.Duration
	// ResyncInterval is how often the daemon re-checks every image that is
	// present (with jitter, so a fleet of nodes does not hit the registry
	// in step).
	ResyncInterval time.Duration
	// RetryInitial and RetryMax bound the daemon's per-image backoff: the
	// first retry after RetryInitial, doubling, capped at RetryMax.
	RetryInitial time.Duration
	RetryMax     time.Duration
	// AlertAfter is how long an image may keep failing before the daemon
	// logs a reminder at ERROR, and again each time that long has passed.
	AlertAfter time.Duration
	// AllowEmpty says that a config with no image block is meant: without
	// it such a config is an error, as an empty or truncated render would
	// otherwise make the agent drop every image it keeps.
	AllowEmpty bool
	// Nomad, when set, turns discovery on: the images of Nomad's jobs that
	// can run on this node are kept too (a static Image for the same
	// expected reference wins).
	Nomad  *Nomad
	Images []Image
	Auths  []Auth
	// Warnings are problems that do not stop the config from being used.
	Warnings []Problem
}

// Docker says how to reach the Docker Engine.
type Docker struct {
	// Host is a Docker host URL (unix:///var/run/docker.sock, tcp://...).
	// Empty means DOCKER_HOST, then the platform default.
	Host string
}

// Image is one image the node must have.
type Image struct {
	// Name is the block's label; it names the entry in logs and summaries.
	Name string
	// Expected is the normalised reference a Nomad job's docker task uses.
	Expected string
	// Sources are normalised references tried in order when Expected can't
	// be pulled.
	Sources []string
	// Digest, when set, is the content every pull must have.
	Digest string
	// Platform is os/arch[/variant], or empty for the daemon's own.
	Platform string
	// Pos is where the block starts.
	Pos Pos
}

// Auth gives the credentials for one registry host.
type Auth struct {
	// Host is the registry host as it appears in references
	// (ghcr.io, registry.example.com:5000; docker.io for Docker Hub).
	Host         string
	Username     string
	PasswordFile string
	PasswordEnv  string
	Pos          Pos
}

// Password reads the password from its file or environment variable. It is
// read at each use, so a rotated secret is picked up without a reload. An
// empty password is an error, as a missing one is: a pull with it could only
// fail to authenticate, saying less. Every error names the host.
func (a Auth) Password() (string, error) {
	if a.PasswordFile != "" {
		b, err := os.ReadFile(a.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("reading password_file of auth %q: %w", a.Host, err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("reading password_file of auth %q: %s is empty", a.Host, a.PasswordFile)
		}
		return pw, nil
	}
	v, ok := os.LookupEnv(a.PasswordEnv)
	if !ok {
		return "", fmt.Errorf("reading password_env of auth %q: environment variable %s is not set", a.Host, a.PasswordEnv)
	}
	if v == "" {
		return "", fmt.Errorf("reading password_env of auth %q: environment variable %s is empty", a.Host, a.PasswordEnv)
	}
	return v, nil
}

// CheckPasswords reads each auth block's password as a pull would, here and
// now, and returns a warning, at the block, for each that can't be had.
// validate reports them as warnings, not errors: the agent may run with
// another environment and other mounts than the shell that validates, and it
// reads each password again at each pull. At most MaxProblems are returned,
// then one that counts the rest.
func (c Config) CheckPasswords() []Problem {
	var warns []Problem
	for _, a := range c.Auths {
		if _, err := a.Password(); err != nil {
			fix := "until prefetch can read it"
			if a.PasswordEnv != "" {
				fix = "until it is set where prefetch runs"
			}
			warns = append(warns, Problem{Pos: a.Pos, Msg: clip(fmt.Sprintf("%v; pulls from %s can't authenticate %s", err, a.Host, fix))})
		}
	}
	return capProblems(c.File, warns, "warnings")
}

// Pos is a position in a configuration file.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Problem is one error or warning found in a configuration file.
type Problem struct {
	Pos Pos
	Msg string
}

func (p Problem) String() string { return p.Pos.String() + ": " + p.Msg }

// Errors is every error found in one configuration file, in file order.
// Parse returns it (as an error) so callers can print each problem on a line
// of its own; its length is the count of problems. Callers show the first
// MaxProblems and count the rest, as Error does.
type Errors []Problem

// Error is the first MaxProblems problems, one a line, and then "and N
// more" when there are more: bounded, since the agent logs it as one line.
func (e Errors) Error() string {
	shown := e[:min(len(e), MaxProblems)]
	lines := make([]string, 0, len(shown)+1)
	for _, p := range shown {
		lines = append(lines, p.String())
	}
	if n := len(e) - len(shown); n > 0 {
		lines = append(lines, fmt.Sprintf("and %d more", n))
	}
	return strings.Join(lines, "\n")
}
