// Package jobs holds the files that deploy prefetch and eventlog, and the
// tests that keep them honest; it has no Go API.
//
//   - prefetch.nomad.hcl: the node agent as a Nomad system job, its config
//     rendered by a template block from Consul KV or Nomad Variables;
//   - prefetch.ctmpl: that template, also used by a standalone
//     consul-template on nodes outside Nomad (see systemd/);
//   - eventlog.nomad.hcl and eventlog-policy.hcl: the event stream logger as
//     a service job, and the ACL policy its workload identity needs.
//
// No Nomad or Consul server can run where the tests run, so the tests check
// what can be checked without one: the job files are parsed with HCL and
// the settings the programs depend on are checked against the programs'
// real flags, and the template is rendered by the real consul-template
// against small in-process fakes of Consul's KV and Nomad's variables
// endpoints, then loaded with prefetch's own config loader. The systemd
// units in ../../systemd, the other way to run the same programs with the
// same template, are checked here too.
package jobs
