// Package watch owns noticing that the agent's config file changed: it calls
// back once per burst of changes to one file, and leaves reading, parsing and
// swapping the config to its caller.
//
// # Why the directory is watched, not the file
//
// The config is rendered by consul-template, or by Nomad's template block,
// which is consul-template inside Nomad. It never writes the file in place: it
// writes a temporary file next to it and renames that over the target. Seen
// from a real Nomad 2.0 docker task (template from Nomad Variables), a
// re-render shows up in the task's /local as CREATE, WRITE and CHMOD of a
// numbered temporary file, then its RENAME to config.hcl. A watch on the file
// itself follows the old inode, which the rename just unlinked, so it would see
// the first render and nothing after. Nomad also mounts the template's
// directory, not the file, into the task. Editors write in place, some tools
// delete and then create, and chmod happens too.
//
// So File watches the parent directory and matches the file's base name. That
// one rule covers a rename over the target (it arrives as a CREATE of the
// target's name), an in-place write, a delete then create, and a chmod, and
// the watch survives the file being replaced or missing for a while. Events
// for other names in the directory (consul-template's temporary files,
// editors' swap files) are ignored.
//
// When the target is a symlink, as in a Kubernetes ConfigMap volume where
// config.hcl points through ..data to a timestamped directory and an update
// swaps ..data, no event names config.hcl. For that case any event in the
// directory also counts as a change when it changed where the path resolves
// to. A symlink into another directory is not followed: changes made there in
// place are not seen.
//
// # Why debounce has a quiet window and a maximum delay
//
// One render is several events (create, write, chmod, rename), and several
// renders can come close together: consul-template renders again as each of a
// template's dependencies changes. Each burst should be one reload. This is
// consul-template's own quiescence (its wait = "min:max"): a quiet timer that
// every change restarts, so the reload happens once changes stop, and a
// maximum delay from the first change of the burst, so a writer that never
// stops (a flapping dependency, a log written next to the config) cannot
// starve reloads. The rule is the small pure function [Debounce] drives in
// burst; it reads no clock, so it is table-tested with made-up times.
//
// When the watcher itself reports an error, typically an overflowing event
// queue, events may have been lost. That too is a change: the caller re-reads
// the file, and gets the error to report, since this package logs nothing.
//
// It imports nothing of the project's.
package watch
