# The ACL policy of whoever runs `prefetch stage` (an operator, a CI job):
# parse the job file with Nomad and read the registered job (its modify
# index, for -run's guard), write the staged set, and with -run register
# the job. Create a token with it:
#
#   nomad acl policy apply -description "prefetch stage" prefetch-stage prefetch-stage-policy.hcl
#   nomad acl token create -name ci-stage -policy prefetch-stage
#
# The agents are found through the service catalog as `prefetch wait`
# finds them: with -provider nomad the token also reads the services in
# -agents-namespace (read-job covers it). Narrow "*" to the namespaces of
# the jobs staged; drop submit-job if stage never runs with -run.
#
# Nomad checks a job's volumes when it is registered: for -run of a job
# that mounts a host volume (a registry's storage, say), add for each
# volume, at the top level:
#
#   host_volume "registry-data" {
#     capabilities = ["mount-readwrite"]
#   }
#
# (seen on Nomad 2.0.5: without it the registration is a 403 after the
# whole wait).

namespace "*" {
  capabilities = ["parse-job", "read-job", "submit-job"]
}

# The staged set lives in namespace "default": write (and read) on that one
# variable. Nomad applies the most specific namespace rule alone, so this
# block repeats the "*" one.
namespace "default" {
  capabilities = ["parse-job", "read-job", "submit-job"]

  variables {
    path "nomad-prefetch/staged" {
      capabilities = ["read", "write"]
    }
  }
}
