// Package eventlog is eventlog's lifecycle, from Options to a stopped
// stream. Run builds the Nomad client, finds where to start (the state file,
// else Options.Index), runs the nomad.Streamer into Options.Stdout
// (through nomad.Lines), keeps the
// state file up to date, serves /healthz and /metrics, logs the start and the
// stop, and stops cleanly when its context ends: stdout flushed, the state
// written. It is a package of its own so that a test runs all of that with
// one call, Run(ctx, Options), without flags, a process or an exit code.
//
// In HA mode (Options.HALock) the position is not in a state file but in
// the items of a Nomad variable whose lock the instances contend for
// (ha.go): the holder streams, renewing the lock (lease.go) and writing
// events to stdout only once the variable holds their index (checkpoint.go);
// the others wait as standbys, and a new holder resumes from the variable.
//
// Dependencies point one way: cmd/eventlog (flags, usage text, the logger,
// the exit code) imports eventlog, which imports nomad (the stream) and
// Nomad's api client settings. eventlog must not import cmd/eventlog or the
// flag package, nor exit the process, nor import prefetch's packages (agent,
// registry, status, config, watch): the two programs share only what nomad
// shares (backoff, outage). What a failure means for the exit code is the command's
// to decide; ConfigError marks the failures that are the options' fault.
package eventlog
