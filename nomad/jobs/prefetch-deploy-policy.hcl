# The ACL policy of the token that deploys prefetch (the operator's, or a
# CI job's), not of any workload: it may submit jobs in prefetch's
# namespace and mount prefetch's host volumes. The Docker socket is root on
# the node, so no other policy may grant these host volumes, or
# host_volume "*": Nomad checks a host volume against the token submitting
# the job, by the volume's name, whatever the job's namespace.
#
#   nomad acl policy apply -description "deploy prefetch" prefetch-deploy prefetch-deploy-policy.hcl
#   nomad acl token create -name prefetch-deployer -policy prefetch-deploy
#
# Management tokens (and clusters without ACLs) are not limited by this:
# without ACLs, any job submitter may mount any host volume a client
# defines.

# The namespace the prefetch job runs in (nomad job run -namespace=...).
namespace "default" {
  capabilities = ["submit-job", "read-job", "list-jobs", "read-logs"]
}

# The socket (read-write: a client connects to it) and the lock directory;
# prefetch-bundles, if the job mounts one (bundle_volume), read-only.
host_volume "prefetch-docker-sock" {
  capabilities = ["mount-readwrite"]
}

host_volume "prefetch-lock" {
  capabilities = ["mount-readwrite"]
}

host_volume "prefetch-bundles" {
  capabilities = ["mount-readonly"]
}
