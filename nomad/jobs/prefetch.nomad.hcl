# prefetch: the node agent, on every node of a node pool. It keeps the images
# the cluster's own registry path needs (the registry, its proxy, its storage,
# Nomad's pause image) present on each node, pulling them from a source and
# tagging them as the job expects when the in-cluster registry can't serve
# them. See docs/bootstrap.md.
#
#   cd nomad/jobs
#   nomad job run -var image=ghcr.io/acme/nomad-prefetch:v0.1.0 prefetch.nomad.hcl
#   nomad job run -var image=... -var config_source=nomad prefetch.nomad.hcl   # no Consul
#
# (file() reads the template relative to the working directory; from
# elsewhere, pass -var template_file=path/to/prefetch.ctmpl.)
#
# What each node needs (docs/bootstrap.md, "The job"):
#   - the Docker socket and a lock directory as Nomad host volumes; the
#     docker driver's volumes stay disabled, so no other job can bind host
#     paths:
#       client {
#         host_volume "prefetch-docker-sock" { path = "/var/run/docker.sock" }
#         host_volume "prefetch-lock" { path = "/var/lib/nomad-prefetch" }
#         meta { docker_gid = "999" }   # stat -c %g /var/run/docker.sock
#       }
#     with /var/lib/nomad-prefetch made by
#       install -d -o 65532 -g docker -m 2770 /var/lib/nomad-prefetch
#     (the image's user and the docker group: the systemd unit shares the lock)
#   - with ACLs, the submitting token allowed to mount them (Nomad checks a
#     host volume against the token that submits the job, whatever its
#     namespace): prefetch-deploy-policy.hcl, on the deployer's token only.
#   - the prefetch image itself present or pullable without the in-cluster
#     registry: list it in the config too, with an upstream source.

variable "image" {
  type        = string
  description = "The prefetch image. Keep it pullable without the in-cluster registry (an upstream registry), or list it in its own config with a source."
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "node_pool" {
  type        = string
  default     = "all"
  description = "The node pool to run on: \"all\" is every node."
}

variable "config_source" {
  type        = string
  default     = "consul"
  description = "Where the image list comes from: \"consul\" (KV under kv_prefix) or \"nomad\" (the variable at var_path)."

  validation {
    condition     = contains(["consul", "nomad"], var.config_source)
    error_message = "The config_source must be \"consul\" or \"nomad\"."
  }
}

variable "kv_prefix" {
  type        = string
  default     = "prefetch/images"
  description = "consul: the KV prefix holding one key per image."
}

variable "var_path" {
  type        = string
  default     = "nomad/jobs/prefetch"
  description = "nomad: the Nomad variable holding one item per image. Under nomad/jobs/prefetch the job reads it without an ACL policy."
}

variable "template_file" {
  type        = string
  default     = "prefetch.ctmpl"
  description = "The consul-template template, read when the job is submitted (relative to the working directory)."
}

variable "docker_socket_volume" {
  type        = string
  default     = "prefetch-docker-sock"
  description = "The client host volume holding the Docker socket (host_volume \"prefetch-docker-sock\" { path = \"/var/run/docker.sock\" }), mounted at /var/run/docker.sock."
}

variable "docker_gid" {
  type        = string
  default     = "$${meta.docker_gid}"
  description = "The Docker socket's group ID, added to the task's non-root user. The default is each node's client meta docker_gid, so nodes may differ."
}

variable "bundle_volume" {
  type        = string
  default     = ""
  description = "A client host volume holding bundle files (prefetch bundle), mounted read-only at /bootstrap so the config's bundle:/bootstrap/... sources work in the task; \"\" mounts nothing."
}

variable "lock_volume" {
  type        = string
  default     = "prefetch-lock"
  description = "The client host volume of a directory only the image's user (65532) and the docker group may write (install -d -o 65532 -g docker -m 2770 /var/lib/nomad-prefetch), holding the lock that keeps one agent per node (shared with the systemd unit's)."
}

variable "discovery" {
  type        = bool
  default     = false
  description = "Also keep the images of every Nomad job that can run on each node (discovery), with no list to maintain. Attach prefetch-policy.hcl to this job first."
}

variable "discovery_relay" {
  type        = bool
  default     = false
  description = "discovery: elect one agent to follow Nomad's Job events and serve them to the others, so that Nomad's servers serve one subscription per cluster instead of one per node (worth it from about 50 nodes; docs/operating.md, The relay). Needs prefetch-policy.hcl's write on nomad/jobs/prefetch/relay."
}

variable "discovery_peers" {
  type        = string
  default     = ""
  description = "discovery: make the sibling agents a source of every image: \"first\" (before any registry: the agents agree which one pulls a new image, the others copy it from a peer: one registry pull per image per cluster) or \"last\" (only when every registry failed); \"\" turns it off (docs/operating.md, Peers)."

  validation {
    condition     = contains(["", "first", "last"], var.discovery_peers)
    error_message = "The discovery_peers must be \"\", \"first\" or \"last\"."
  }
}

variable "discovery_rewrites" {
  type = list(object({
    from    = string
    sources = list(string)
  }))
  default     = []
  description = "discovery: how a job's image maps to sources, first match wins: [{from = \"registry.service.consul:5000/\", sources = [\"docker.io/library/\"]}]."
}

variable "discovery_namespaces" {
  type        = list(string)
  default     = ["*"]
  description = "discovery: the namespaces whose jobs count (globs)."
}

variable "discovery_include" {
  type        = list(string)
  default     = []
  description = "discovery: keep only images matching one of these globs over the normalised reference (empty: all)."
}

variable "discovery_exclude" {
  type        = list(string)
  default     = []
  description = "discovery: never keep images matching one of these globs, e.g. [\"*:latest\"]."
}

variable "discovery_infra_image" {
  type        = string
  default     = ""
  description = "discovery: the clients' infra_image (the pause container of bridge networking): \"\" for Nomad's default, registry.k8s.io/pause-ARCH:3.3; \"none\" to keep none."
}

variable "discovery_max_images" {
  type        = number
  default     = 100
  description = "discovery: at most this many discovered images per node (1 to 10000); the newest jobs' beyond it are left out, listed and counted."
}

variable "discovery_include_undecided" {
  type        = bool
  default     = false
  description = "discovery: also keep the images of jobs whose placement can't be decided on the node (a version constraint, an unknown operator)."
}

variable "discovery_allowed_prefixes" {
  type        = list(string)
  default     = []
  description = "discovery: keep only images under these normalised prefixes (\"registry.service.consul:5000\", \"docker.io/library/\"); empty: every registry."
}

variable "discovery_hold_readiness" {
  type        = bool
  default     = false
  description = "discovery: a discovered image that can't be fetched holds /readyz at 503."
}

variable "status_token_var" {
  type        = string
  default     = ""
  description = "A Nomad variable whose item status_token (at least 16 characters) is the bearer token that reads /metrics and /v1/status on the node's address: for prefetch status -cluster -token-file, prefetch wait -token-file and Prometheus. \"\": those are served on each node's loopback only (127.0.0.1:9105). The task reads nomad/jobs/prefetch/prefetch without a policy; it must exist before the job runs."
}

variable "discovery_yield" {
  type        = string
  default     = "cancel"
  description = "discovery: while a task starting on the node waits for an absent image, \"cancel\" the agent's background pulls, \"pause\" them, or \"off\" (docs/operating.md, Foreground first)."
}

variable "discovery_background_pulls" {
  type        = number
  default     = 1
  description = "discovery: the most background pulls at once (1 to 64, at most concurrency), leaving Docker's download slots to Nomad's pulls."
}

variable "service_provider" {
  type        = string
  default     = "nomad"
  description = "Where the /readyz and /healthz checks are registered: \"nomad\" (no Consul needed) or \"consul\"."
}

job "prefetch" {
  type        = "system"
  datacenters = var.datacenters
  node_pool   = var.node_pool
  # Before anything that needs the images it keeps.
  priority = 90

  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    # A node still pulling is not an unhealthy agent: /readyz is for
    # operators and deploy gates, not for this deployment.
    health_check = "task_states"
  }

  group "prefetch" {
    network {
      port "http" {}
    }

    # Host volumes, not docker volumes: Nomad lets only a token granted
    # these names (prefetch-deploy-policy.hcl) submit a job that mounts
    # them, and places the job only on nodes that define them.
    volume "docker-sock" {
      type   = "host"
      source = var.docker_socket_volume
    }

    # A host directory, so every allocation on a node takes the same lock:
    # one agent per node.
    volume "lock" {
      type   = "host"
      source = var.lock_volume
    }

    dynamic "volume" {
      for_each = var.bundle_volume == "" ? [] : [var.bundle_volume]
      labels   = ["bundles"]
      content {
        type      = "host"
        source    = volume.value
        read_only = true
      }
    }

    # On stop, the service is deregistered first and the task signalled 5s
    # later, so `prefetch status -cluster`, `prefetch wait` and Prometheus
    # stop asking an agent that is going away (Nomad 2.0 warns without it).
    # It adds 5s per node to a rolling update (max_parallel = 1).
    shutdown_delay = "5s"

    restart {
      # Two allocations on one node (during an update) share the lock: the
      # newer one exits 2 until the older one has stopped.
      attempts = 10
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    service {
      name     = "prefetch"
      provider = var.service_provider
      port     = "http"

      # With Consul, `prefetch status -cluster` and `prefetch wait` count only
      # the registrations whose meta nomad_job names their -job (Nomad's own
      # catalog records the job itself). Nomad interpolates service meta.
      meta {
        nomad_job = "${NOMAD_JOB_ID}"
      }

      check {
        name     = "ready"
        type     = "http"
        path     = "/readyz"
        interval = "30s"
        timeout  = "5s"
      }

      check {
        name     = "alive"
        type     = "http"
        path     = "/healthz"
        interval = "30s"
        timeout  = "5s"

        check_restart {
          limit = 3
          grace = "1m"
        }
      }
    }

    task "prefetch" {
      driver = "docker"
      # SIGTERM cancels pulls in flight and releases the lock.
      kill_timeout = "30s"

      config {
        image   = var.image
        command = "prefetch"
        # Host networking: no dependency on Nomad's pause image (bridge mode
        # needs it, and it is one of the images this job provides), and the
        # status endpoint on the node's address.
        network_mode = "host"
        # On the node's address: /healthz and /readyz to anyone, /metrics and
        # /v1/status to the bearer token only; everything on 127.0.0.1:9105.
        args = concat([
          "run",
          "-config", "/local/config.hcl",
          "-listen", "${NOMAD_ADDR_http}",
          "-lock-file", "/run/prefetch-lock/prefetch.lock",
        ], var.status_token_var == "" ? [] : ["-status-token-file", "${NOMAD_SECRETS_DIR}/status_token"])
        # The image's user is 65532; the socket's group lets it talk to Docker.
        group_add = [var.docker_gid]
        # It writes nothing but the lock, needs no capability (the socket is
        # reached through its group) and never gains privileges.
        readonly_rootfs = true
        cap_drop        = ["all"]
        security_opt    = ["no-new-privileges"]
      }

      volume_mount {
        volume      = "docker-sock"
        destination = "/var/run/docker.sock"
      }

      volume_mount {
        volume      = "lock"
        destination = "/run/prefetch-lock"
      }

      dynamic "volume_mount" {
        for_each = var.bundle_volume == "" ? [] : ["bundles"]
        content {
          volume      = volume_mount.value
          destination = "/bootstrap"
          read_only   = true
        }
      }

      env {
        PREFETCH_CONFIG_SOURCE = var.config_source
        PREFETCH_KV_PREFIX     = var.kv_prefix
        PREFETCH_VAR_PATH      = var.var_path

        # Discovery talks to this node's own Nomad agent through the task
        # API socket, with the task's workload identity (see the identity
        # block), about this very node.
        PREFETCH_DISCOVERY         = var.discovery
        PREFETCH_NOMAD_ADDR        = "unix://${NOMAD_SECRETS_DIR}/api.sock"
        PREFETCH_NOMAD_TOKEN_FILE  = "${NOMAD_SECRETS_DIR}/nomad_token"
        PREFETCH_NODE_ID           = "${node.unique.id}"
        PREFETCH_NOMAD_NAMESPACES  = jsonencode(var.discovery_namespaces)
        PREFETCH_NOMAD_INCLUDE     = jsonencode(var.discovery_include)
        PREFETCH_NOMAD_EXCLUDE     = jsonencode(var.discovery_exclude)
        PREFETCH_NOMAD_INFRA_IMAGE = var.discovery_infra_image
        PREFETCH_NOMAD_REWRITES    = jsonencode(var.discovery_rewrites)

        PREFETCH_NOMAD_MAX_IMAGES         = var.discovery_max_images
        PREFETCH_NOMAD_INCLUDE_UNDECIDED  = var.discovery_include_undecided
        PREFETCH_NOMAD_HOLD_READINESS     = var.discovery_hold_readiness
        PREFETCH_NOMAD_ALLOWED_PREFIXES   = jsonencode(var.discovery_allowed_prefixes)
        PREFETCH_NOMAD_YIELD              = var.discovery_yield
        PREFETCH_NOMAD_BACKGROUND_PULLS   = var.discovery_background_pulls
        PREFETCH_NOMAD_RELAY              = var.discovery_relay
        PREFETCH_NOMAD_PEERS              = var.discovery_peers
      }

      # The workload identity's token in secrets/nomad_token, for discovery
      # (prefetch-policy.hcl says what it may read).
      identity {
        file = true
      }

      # The agents' identity for one another (discovery_relay,
      # discovery_peers): what this agent presents to the relay and to its
      # peers, and what it checks their calls against, in
      # secrets/nomad_relay.jwt, renewed by Nomad. Its audience is its own,
      # so that the agents refuse the job's default identity; Nomad itself
      # does not check audiences, so it still reads what the job's policy
      # allows while the allocation runs (docs/security.md).
      dynamic "identity" {
        for_each = var.discovery_relay || var.discovery_peers != "" ? ["relay"] : []
        content {
          name = identity.value
          aud  = ["nomad-prefetch-relay"]
          file = true
          ttl  = "1h"
        }
      }

      template {
        data        = file(var.template_file)
        destination = "local/config.hcl"
        # The agent watches the file and reloads by itself; a restart would
        # cancel its pulls.
        change_mode = "noop"
      }

      # The status token, re-read by the agent at every request: rewriting
      # the variable rotates it without a restart.
      dynamic "template" {
        for_each = var.status_token_var == "" ? [] : [var.status_token_var]
        content {
          data        = "{{ with nomadVar \"${template.value}\" }}{{ .status_token }}{{ end }}"
          destination = "secrets/status_token"
          change_mode = "noop"
          perms       = "0400"
          uid         = 65532 # the image's user
          gid         = 65532
        }
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
