// Package registry owns everything about images as Docker sees them: image
// references, registry credentials, and the Docker Engine calls prefetch makes
// (pull, tag, inspect).
//
// It is the adapter between the agent's small Docker interface and
// github.com/moby/moby/client. Two things here are easy to get wrong and are
// the reason this package exists rather than calling the client directly:
//
//   - A pull answers HTTP 200 and then reports most failures inside its
//     progress stream (an errorDetail message). Engine.Pull drains the whole
//     stream and treats an in-stream error as a failed pull. It has no HTTP
//     timeout (a streaming pull can rightly take many minutes); the caller's
//     context bounds it, and a no-progress watchdog cancels a pull whose
//     stream has gone silent.
//   - The Engine never reads ~/.docker/config.json nor runs credential
//     helpers: the client must resolve credentials and send them with each
//     pull. Credentials does that, with the config file's auth blocks first
//     and then the user's Docker config through docker/cli's own loader.
//
// It imports nothing of the project's: its callers turn their config into
// its Options and Auth values. The agent's interfaces are what it implements.
package registry
