//go:build tools

// Package tools pins the docker compose CLI plugin that the tests and the demo run; install-deps.sh
// builds it from here (compose's go.mod has exclude directives, so `go install pkg@version` is refused).
package tools

import _ "github.com/docker/compose/v5/cmd"
