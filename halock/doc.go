// Package halock is the high-availability lock eventlog's instances and
// the agents' relay election share: contenders for one Nomad variable
// lock (nomad.VarLock), one of which holds it at a time.
//
// A Contender tries to acquire the lock until it does, reading the
// variable before each attempt (Nomad writes the variable from an
// acquire's body, so what the last holder left must be carried over or
// replaced knowingly) and waiting with blocking reads while another holds
// it. A Lease keeps the lock once held: it renews it and counts it lost
// before Nomad can give it to anyone else, whatever the network does.
//
// What is reported and how it is logged is the caller's (the Contender's
// hooks). It imports nomad and backoff of the project's, and must not
// import eventlog, agent, discovery or cmd.
package halock
