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

	stopped := stopProcess(t, pid, "dockerd")
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

// TestKubeletRestart: the node's kubelet stops and starts again (scripts/cluster/up.sh starts
// only the node's components when the control plane runs) under a connection with an intercept.
// The port-forward that carries the session goes through the kubelet, so the session drops while
// it is away; the daemon stays up, and without a new connect the session and the intercept are
// back within 10 s of the kubelet's return.
func TestKubeletRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("restarting the built-in cluster's kubelet takes root")
	}
	pid := strings.TrimSpace(run(t, 10*time.Second, "pgrep", "-xo", "kubelet").stdout)
	if pid == "" {
		t.Skip("no kubelet on this machine: the cluster is not the built-in one")
	}
	up, err := filepath.Abs("../scripts/cluster/up.sh")
	if err != nil {
		t.Fatal(err)
	}
	_, clusterIP, conn := echoConnection(t)
	interceptWithHandler(t, conn, clusterIP)
	namespaces := activeNamespaces(t)
	t.Cleanup(func() { run(t, 5*time.Minute, "bash", up) })

	stopped := stopProcess(t, pid, "the kubelet")
	eventually(t, 60*time.Second, "status reports the lost session", func() error {
		s := status(t, conn)
		if !s.Daemon.Running {
			t.Fatalf("the daemon stopped without the kubelet: %+v", s)
		}
		if s.Daemon.Status == "connected" && s.TrafficManager.Connected {
			return fmt.Errorf("still says connected")
		}
		return nil
	})
	t.Logf("%.1fs after the kubelet stopped, status says the session is lost", time.Since(stopped).Seconds())

	must(t, run(t, 5*time.Minute, "bash", up), "scripts/cluster/up.sh")
	back := time.Now()
	// A cluster made anew would have lost them, or given them new UIDs. Namespaces an earlier test
	// left terminating may go meanwhile, so only the active ones are compared.
	now := activeNamespaces(t)
	for name, uid := range namespaces {
		if now[name] != uid {
			t.Fatalf("up.sh did not just restart the kubelet: namespace %s was %s, is now %q\nbefore: %v\nafter: %v", name, uid, now[name], namespaces, now)
		}
	}
	session, intercept := sessionAndInterceptBack(t, conn, clusterIP, back)
	t.Logf("kubelet restarted: the session was back %.1fs and the intercept %.1fs after up.sh returned (the kubelet was away %.1fs)",
		session.Seconds(), intercept.Seconds(), back.Sub(stopped).Seconds())
	if intercept > 10*time.Second {
		t.Errorf("the intercept came back %.1fs after the kubelet, want within 10s", intercept.Seconds())
	}
}

// activeNamespaces maps the cluster's active namespaces to their UIDs.
func activeNamespaces(t *testing.T) map[string]string {
	t.Helper()
	out := must(t, kubectl(t, "get", "namespaces", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.phase}{"\n"}{end}`), "namespaces")
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[2] == "Active" {
			m[f[0]] = f[1]
		}
	}
	if len(m) == 0 {
		t.Fatalf("no active namespace in %q", out)
	}
	return m
}
