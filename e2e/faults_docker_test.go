//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerRestart: dockerd stops (and its containers with it) under a connection with an
// intercept, then comes back. The daemon departs on the way down, so the manager keeps no orphan
// intercept and the cluster's traffic goes back to the app; `status` says Docker is unreachable
// while it is, then that the daemon's container was stopped and how to start it; `connect` brings
// the connection back and the intercept can be made again.
func TestDockerRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("restarting dockerd takes root on the machine")
	}
	script, err := filepath.Abs("../scripts/docker-up.sh")
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(run(t, 10*time.Second, "pgrep", "-xo", "dockerd").stdout)
	if cmdline, _ := os.ReadFile("/proc/" + pid + "/cmdline"); !strings.Contains(string(cmdline), "--containerd=/run/containerd/containerd.sock") {
		t.Skipf("dockerd (pid %q) was not started by scripts/docker-up.sh, which this test restarts it with", pid)
	}
	app, clusterIP, conn := echoConnection(t)
	interceptWithHandler(t, conn, clusterIP)
	// However the test ends, Docker must be up for the tests after it.
	t.Cleanup(func() { run(t, 2*time.Minute, "bash", script) })

	must(t, run(t, 10*time.Second, "kill", "-TERM", pid), "stop dockerd")
	stopped := time.Now()
	eventually(t, 90*time.Second, "dockerd gone", func() error {
		if _, err := os.Stat("/proc/" + pid); err == nil {
			return fmt.Errorf("dockerd %s still runs", pid)
		}
		return nil
	})
	t.Logf("dockerd stopped in %.1fs", time.Since(stopped).Seconds())

	r := teledock(t, "status", "--name", conn, "-o", "json")
	var st struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal([]byte(r.stdout), &st); exitCode(r.err) != 7 || st.Error.Code != "DOCKER_UNAVAILABLE" {
		t.Errorf("status without Docker: exit %d, %s%s; want exit 7 and DOCKER_UNAVAILABLE", exitCode(r.err), r.stdout, r.stderr)
	}

	backAtTheApp(t, app, clusterIP, stopped, "dockerd stopped")

	started := time.Now()
	must(t, run(t, 2*time.Minute, "bash", script), "scripts/docker-up.sh")
	t.Logf("scripts/docker-up.sh brought Docker back in %.1fs", time.Since(started).Seconds())

	out := must(t, teledock(t, "status", "--name", conn, "-o", "json"), "status after Docker's restart")
	var after struct {
		Daemon struct {
			Running        bool   `json:"running"`
			ContainerState string `json:"container_state"`
			Stopped        *struct {
				ExitCode int    `json:"exit_code"`
				Reason   string `json:"reason"`
			} `json:"stopped"`
		} `json:"daemon"`
	}
	if err := json.Unmarshal([]byte(out), &after); err != nil || after.Daemon.Running || after.Daemon.Stopped == nil ||
		!strings.Contains(after.Daemon.Stopped.Reason, "stopped by Docker") {
		t.Errorf("status after Docker's restart (%v):\n%s", err, out)
	}
	t.Logf("status after the restart: %s", must(t, teledock(t, "status", "--name", conn), "status"))

	connectAs(t, app.Namespace, conn)
	list := must(t, teledock(t, "list", "--name", conn, "-o", "json"), "list")
	if strings.Contains(list, `"intercepts"`) {
		t.Errorf("the manager kept an intercept of the connection that Docker stopped:\n%s", list)
	}
	interceptWithHandler(t, conn, clusterIP)
}
