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
namespace "*" {
  policy = "read"
}

# Node and NodePool events.
node {
  policy = "read"
}

# CSIPlugin events.
plugin {
  policy = "read"
}
