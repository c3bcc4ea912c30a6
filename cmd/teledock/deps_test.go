package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestCLIDependencies keeps the daemon's data path out of the CLI: gVisor and the netstack belong in
// the daemon container only.
func TestCLIDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"gvisor.dev/", "teledock.dev/teledock/daemoncontainer/netstack", "teledock.dev/teledock/daemoncontainer/dns", "teledock.dev/teledock/daemoncontainer/session"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("the CLI imports %s", dep)
			}
		}
	}
}
