# Images teledock ships and the images its tests use. All are FROM scratch with static binaries that
# `make build` puts in build/bin; no registry is needed. Build with `make images`.

variable "VERSION" {
  default = "dev"
}

group "default" {
  targets = ["ship", "test"]
}

# What teledock ships.
group "ship" {
  targets = ["daemon", "traffic-manager", "traffic-agent"]
}

group "test" {
  targets = ["echo"]
}

target "_bin" {
  context = "build/bin"
}

target "daemon" {
  inherits   = ["_bin"]
  dockerfile = "../../daemoncontainer/Dockerfile"
  tags       = ["teledock/daemon:${VERSION}"]
}

target "traffic-manager" {
  inherits   = ["_bin"]
  dockerfile = "../../cluster/Dockerfile"
  tags       = ["teledock/traffic-manager:${VERSION}"]
}

target "traffic-agent" {
  inherits   = ["_bin"]
  dockerfile = "../../agent/Dockerfile"
  tags       = ["teledock/traffic-agent:${VERSION}"]
}

target "echo" {
  inherits   = ["_bin"]
  dockerfile = "../../e2e/images/echo/Dockerfile"
  tags       = ["teledock/echo:${VERSION}"]
}

# The Docker Desktop extension (make extension): the UI and the CLI for the host, for the platform
# of the engine it is loaded into; a release sets PLATFORMS and pushes.
variable "PLATFORMS" {
  default = ""
}

target "desktop-extension" {
  # make extension puts metadata.json, the icon, ui/ and desktop-bin/ARCH/OS/ here.
  context    = "build/desktop-context"
  dockerfile = "../../desktop/Dockerfile"
  args = {
    VERSION = "${VERSION}"
  }
  platforms = PLATFORMS == "" ? [] : split(",", PLATFORMS)
  tags      = ["teledock/desktop-extension:${VERSION}"]
}
