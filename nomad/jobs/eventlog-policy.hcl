# The ACL policy eventlog's workload identity needs to read the event stream
# with its default topics (Job, Evaluation, Allocation, Deployment, Node,
# Service, CSIVolume, CSIPlugin, HostVolume): Nomad refuses the whole
# subscription when one topic is not allowed. Attach it to the job:
#
#   nomad acl policy apply -namespace default -job eventlog \
#     -description "eventlog: read the event stream" eventlog eventlog-policy.hcl
#
# Narrow it together with eventlog's -topic and -namespace flags. Each rule
# is a capability list: read-job for the Job, Evaluation, Allocation,
# Deployment, Service and CSIPlugin topics, csi-read-volume for CSIVolume,
# host-volume-read for HostVolume (what Nomad's event endpoint checks).

# Every namespace's events.
namespace "*" {
  capabilities = ["read-job", "csi-read-volume", "host-volume-read"]
}

# The job's own namespace ("default"; rename the block to the namespace the
# job runs in): the same, and with the job's ha = true the lock eventlog's
# instances contend for, with the checkpoint its holder keeps in it
# (-ha-lock). Read and write on that one path, nothing else: acquire,
# renew, release and the holder's writes need write, the standby's blocking
# reads and the holder's read of the checkpoint need read. Nomad applies the
# most specific namespace rule alone, so this block repeats the "*" one.
namespace "default" {
  capabilities = ["read-job", "csi-read-volume", "host-volume-read"]

  variables {
    path "nomad/jobs/eventlog/lock" {
      capabilities = ["read", "write"]
    }
  }
}

# Node events.
node {
  policy = "read"
}
