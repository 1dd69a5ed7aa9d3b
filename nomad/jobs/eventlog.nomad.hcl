# eventlog: Nomad's event stream to stdout, one JSON object per line, for a
# log shipper reading the task's stdout (nomad alloc logs, or the shipper's
# Nomad integration). By default one instance; its position in the stream
# survives a restart on the same node in a state file on sticky ephemeral
# disk. With -var ha=true, two instances on two nodes contend for a Nomad
# variable lock (Nomad 1.7 or later): one streams and keeps its position in
# the lock's variable, the other takes over when it stops or its node dies,
# without losing or repeating events (docs/eventlog.md, HA mode).
#
#   nomad acl policy apply -namespace default -job eventlog eventlog eventlog-policy.hcl
#   nomad job run -var image=ghcr.io/acme/nomad-prefetch:v0.1.0 eventlog.nomad.hcl
#   nomad job run -var image=ghcr.io/acme/nomad-prefetch:v0.1.0 -var ha=true eventlog.nomad.hcl
#
# It talks to Nomad through the task API socket with its workload identity,
# so it needs no address and no token of its own (Nomad 1.5 or later).

variable "image" {
  type        = string
  description = "The nomad-prefetch image (it holds both prefetch and eventlog)."
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "node_pool" {
  type    = string
  default = "default"
}

variable "namespace" {
  type        = string
  default     = "*"
  description = "The namespace to follow; * is every namespace."
}

variable "topics" {
  type        = list(string)
  default     = []
  description = "Topic[:Key] filters, e.g. [\"Job\", \"Allocation\"]; empty is eventlog's default list. Keep eventlog-policy.hcl in step."
}

variable "service_provider" {
  type    = string
  default = "nomad"
}

variable "ha" {
  type        = bool
  default     = false
  description = "Two instances on two nodes, one streaming, one standby, contending for the lock of the Nomad variable nomad/jobs/eventlog/lock (Nomad 1.7 or later; eventlog-policy.hcl grants it)."
}

job "eventlog" {
  type        = "service"
  datacenters = var.datacenters
  node_pool   = var.node_pool

  group "eventlog" {
    # One instance, or with ha two that contend for the lock: only its
    # holder writes events, so two never write an event twice.
    count = var.ha ? 2 : 1

    # The standby is there for when the holder's node dies: not on the same
    # node.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # alloc/data survives a replacement on the same node (and is migrated
    # when the replacement lands elsewhere), so the state file lets a new
    # allocation resume where the old one stopped. With ha the position is
    # in the lock's variable instead.
    ephemeral_disk {
      size    = 300
      sticky  = true
      migrate = true
    }

    restart {
      attempts = 5
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    network {
      port "http" {}
    }

    # The service is deregistered 5s before the task is signalled, so
    # Prometheus stops scraping it first (Nomad 2.0 warns without it).
    shutdown_delay = "5s"

    service {
      name     = "eventlog"
      provider = var.service_provider
      port     = "http"

      # 503 when Nomad refuses the subscription or has been unreachable for
      # long: worth an alert, not a restart (a restart fixes neither). A
      # standby is healthy.
      check {
        name     = "alive"
        type     = "http"
        path     = "/healthz"
        interval = "30s"
        timeout  = "5s"
      }
    }

    task "eventlog" {
      driver = "docker"
      # SIGTERM flushes stdout and saves the state file, or with ha writes
      # the checkpoint and releases the lock, so that the standby takes
      # over at once.
      kill_timeout = "30s"

      # The workload identity, as a file that eventlog reads again before
      # every connection (Nomad rewrites it when it rotates).
      identity {
        file = true
      }

      config {
        image        = var.image
        command      = "eventlog"
        network_mode = "host"
        args = concat(var.ha ? [
          # The lock, and the checkpoint in its items, in the job's own
          # namespace (NOMAD_NAMESPACE). Keep in step with the policy.
          "-ha-lock", "nomad/jobs/eventlog/lock",
          ] : [
          "-state-file", "${NOMAD_ALLOC_DIR}/data/eventlog.state",
          ], [
          "-token-file", "${NOMAD_SECRETS_DIR}/nomad_token",
          "-namespace", var.namespace,
          "-listen", "${NOMAD_ADDR_http}",
          # A frame kept costs about twice its size: 16 MiB keeps the task
          # well inside its memory below (the binary's default, 64 MiB,
          # would not be), and is far above any Job or Allocation event.
          "-max-frame-bytes", "16777216",
        ], flatten([for t in var.topics : ["-topic", t]]))
        # It writes only to stdout and the alloc dir, and needs no
        # capability.
        readonly_rootfs = true
        cap_drop        = ["all"]
        security_opt    = ["no-new-privileges"]
      }

      env {
        NOMAD_ADDR = "unix://${NOMAD_SECRETS_DIR}/api.sock"
      }

      # stdout is the product: keep enough of it for the shipper to catch up
      # after an outage of its own.
      logs {
        max_files     = 10
        max_file_size = 20
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }
  }
}
