# Images teledock ships and the images its tests use. All are FROM scratch with static binaries that
# `make build` puts in build/bin; no registry is needed. Build with `make images`.

variable "VERSION" {
  default = "dev"
}

group "default" {
  targets = ["ship", "test"]
}

# What teledock ships. Targets join as the components arrive.
group "ship" {
  targets = []
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
