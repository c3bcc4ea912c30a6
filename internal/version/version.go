// Package version holds the build's version, stamped by the Makefile from git.
package version

// Version is set at link time with -X teledock.dev/teledock/internal/version.Version=...
var Version = "v0.0.0-dev"
