job "roll" {
  type        = "system"
  datacenters = ["*"]
  update {
    max_parallel     = 1
    min_healthy_time = "2s"
    health_check     = "task_states"
  }
  group "g" {
    network {
      port "http" {}
    }
    shutdown_delay = "1s"
    service {
      name     = "roll"
      provider = "nomad"
      port     = "http"
      meta {
        nomad_job = "${NOMAD_JOB_ID}"
      }
    }
    task "t" {
      driver       = "raw_exec"
      kill_timeout = "2s"
      config {
        command = "/bin/sleep"
        args    = ["3600"]
      }
      env {
        VERSION = "v2"
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
