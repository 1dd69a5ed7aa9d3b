# The ACL policy eventlog's workload identity needs to read the event stream
# with its default topics (Job, Evaluation, Allocation, Deployment, Node,
# NodePool, Service, CSIVolume, CSIPlugin, HostVolume): Nomad refuses the
# whole subscription when one topic is not allowed. Attach it to the job:
#
#   nomad acl policy apply -namespace default -job eventlog \
#     -description "eventlog: read the event stream" eventlog eventlog-policy.hcl
#
# Narrow it together with eventlog's -topic and -namespace flags.

# Job, Evaluation, Allocation, Deployment, Service, CSIVolume and HostVolume
# events, in every namespace.
#
# With the job's ha = true: the lock eventlog's instances contend for, and
# the checkpoint its holder keeps in it (-ha-lock). Read and write on that
# one path, nothing else: acquire, renew, release and the holder's writes
# need write, the standby's blocking reads and the holder's read of the
# checkpoint need read. It is granted here, in the "*" block, because the
# variable lives in the job's own namespace, which this file cannot name;
# the policy applies to the eventlog job's workload identity only.
namespace "*" {
  policy = "read"

  variables {
    path "nomad/jobs/eventlog/lock" {
      capabilities = ["read", "write"]
    }
  }
}

# Node and NodePool events.
node {
  policy = "read"
}

# CSIPlugin events.
plugin {
  policy = "read"
}
