# consul-template's config for consul-template-prefetch.service.

consul {
  # Or CONSUL_HTTP_ADDR. The local Consul agent, when the node has one.
  address = "127.0.0.1:8500"

  retry {
    # Keep trying while Consul is not up yet; never give up.
    attempts    = 0
    backoff     = "1s"
    max_backoff = "1m"
  }
}

# For PREFETCH_CONFIG_SOURCE=nomad (no Consul): Nomad's address and a token
# that may read the variable (NOMAD_TOKEN in /etc/prefetch/consul-template.env).
# nomad {
#   address = "https://nomad.example:4646"
# }

template {
  source      = "/etc/prefetch/prefetch.ctmpl"
  destination = "/etc/prefetch/config.hcl"
  perms       = 0644
  # No command: prefetch watches the file and reloads by itself.
}
