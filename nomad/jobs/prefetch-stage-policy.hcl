# The ACL policy of whoever runs `prefetch stage` (an operator, a CI job):
# parse the job file with Nomad and read the registered job (its modify
# index, for -run's guard), write the staged set, and with -run register
# the job. Create a token with it:
#
#   nomad acl policy apply -description "prefetch stage" prefetch-stage prefetch-stage-policy.hcl
#   nomad acl token create -name ci-stage -policy prefetch-stage
#
# The agents are found through the service catalog as `prefetch wait`
# finds them: with -provider nomad the token also reads the services
# (read-job covers it). Narrow "*" to the namespaces of the jobs staged;
# drop submit-job if stage never runs with -run.

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
