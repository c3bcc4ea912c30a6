# Images teledock ships and the images its tests use. All are FROM scratch with static binaries that
# `make build` puts in build/bin; no registry is needed. Build with `make images`.

variable "VERSION" {
  default = "dev"
}

# What teledock ships (daemon, traffic-manager, traffic-agent) joins "default" as each arrives.
group "default" {
  targets = ["test"]
}

group "test" {
  targets = ["echo"]
}

target "_bin" {
  context = "build/bin"
}

target "echo" {
  inherits   = ["_bin"]
  dockerfile = "../../e2e/images/echo/Dockerfile"
  tags       = ["teledock/echo:${VERSION}"]
}
