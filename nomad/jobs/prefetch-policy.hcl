# The ACL policy prefetch's workload identity needs for discovery (the job's
# discovery variable): list and read the jobs, and follow their events, in
# the namespaces it follows; read its own node's datacenter, pool, class,
# attributes and meta; read the staged set `prefetch stage` writes. Attach
# it to the job:
#
#   nomad acl policy apply -namespace default -job prefetch \
#     -description "prefetch: discover the images of the jobs" prefetch prefetch-policy.hcl
#
# With the job's discovery_peers, the agents find one another in Nomad's
# service catalog (GET /v1/service/prefetch in the job's namespace), which
# Nomad lets every workload identity read (recorded from 2.0.5 with ACLs
# on, even with this policy detached): nothing more is needed.
#
# The job passes its node's ID (${node.unique.id}), so no agent:read is
# needed. Narrow "*" together with the job's discovery_namespaces.

namespace "*" {
  capabilities = ["list-jobs", "read-job"]
}

# The staged set lives in namespace "default" (always, whatever namespace
# the job runs in): read on that one variable. With the job's
# discovery_relay = true, the lock the agents contend for to elect the
# relay (the relay block's lock_path, in the job's namespace: rename or
# copy this block when the job runs elsewhere): read and write on that one
# path (acquire, renew and release need write, the blocking reads read).
# Nothing else. Nomad applies the most specific namespace rule alone, so
# this block repeats the "*" one.
namespace "default" {
  capabilities = ["list-jobs", "read-job"]

  variables {
    path "nomad-prefetch/staged" {
      capabilities = ["read"]
    }
    path "nomad/jobs/prefetch/relay" {
      capabilities = ["read", "write"]
    }
  }
}

node {
  policy = "read"
}
