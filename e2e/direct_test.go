//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The direct transport: `install --direct` exposes the manager on a NodePort, a connection with
// --transport direct carries its tunnels over it (status says so, 1 GiB each way arrives intact,
// 200 connections at once all succeed), a connection that insists on it against a manager without
// it fails clearly and leaves nothing, and uninstall removes the NodePort with the rest.
func TestDirectTransport(t *testing.T) {
	mgrNS := "e2e-direct-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	uninstall := append([]string{"uninstall"}, installArgs(mgrNS)[:4]...)
	t.Cleanup(func() { teledock(t, uninstall...) })
	r := teledock(t, append(append([]string{"install"}, installArgs(mgrNS)...), "--direct")...)
	must(t, r, "install --direct")
	if typ := jsonpath(t, mgrNS, "service/traffic-manager-direct", "{.spec.type}"); typ != "NodePort" {
		t.Fatalf("direct service type %q, want NodePort", typ)
	}

	app := deployEcho(t, newNamespace(t), "echo")
	conn := connName(t, "")
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", app.Namespace, "--name", conn,
		"--manager-namespace", mgrNS, "--image", image("daemon"), "--transport", "direct"), "connect --transport direct")

	s := status(t, conn)
	if s.Daemon.Transport != "direct" {
		t.Fatalf("status transport %q (%s), want direct", s.Daemon.Transport, s.Daemon.TransportError)
	}
	text := must(t, teledock(t, "status", "--name", conn), "status text")
	if !transportLine(text, "direct") {
		t.Errorf("status text does not say the transport is direct:\n%s", text)
	}

	out := must(t, inCluster(t, conn, "http", "http://echo/"), "GET http://echo/")
	if !strings.HasPrefix(out, app.Text) {
		t.Errorf("GET http://echo/ = %q, want %q", out, app.Text)
	}
	checkGiBBothWays(t, conn)
	// Many flows at once: each is a raw tunnel of its own (two dialled ahead, the rest dialled then).
	if out := must(t, inCluster(t, conn, "load", "http://echo/", "200"), "200 connections at once"); !strings.HasPrefix(out, "200 ok, 0 failed") {
		t.Errorf("load over the direct transport: %q", out)
	}
	// Nothing fell back during the transfers.
	if s := status(t, conn); s.Daemon.Transport != "direct" {
		t.Errorf("after the transfer: transport %q (%s), want direct", s.Daemon.Transport, s.Daemon.TransportError)
	}

	// Insisting on direct against a manager without it: a clear error, and no container left.
	ensureManager(t)
	refused := connName(t, "-pf")
	t.Cleanup(func() { teledock(t, "quit", "--name", refused) })
	r = teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", app.Namespace, "--name", refused,
		"--manager-namespace", managerNamespace, "--image", image("daemon"), "--transport", "direct", "--timeout", "60s")
	if r.err == nil {
		t.Fatalf("connect --transport direct to a manager without --direct succeeded:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "direct transport") || !strings.Contains(r.stderr, "install --direct") {
		t.Errorf("connect's error does not explain itself:\n%s", r.stderr)
	}
	if out := must(t, docker(t, "ps", "-aq", "--filter", "label=teledock.dev/name="+refused), "docker ps"); strings.TrimSpace(out) != "" {
		t.Errorf("the failed connect left container(s) %s", out)
	}

	// Uninstall takes the NodePort Service with the rest.
	must(t, teledock(t, uninstall...), "uninstall")
	if r := kubectl(t, "-n", mgrNS, "get", "service", "traffic-manager-direct"); r.err == nil {
		t.Errorf("the direct Service outlived uninstall")
	}
}

// transportLine reports whether status text has a "Transport: want" line.
func transportLine(text, want string) bool {
	for _, l := range strings.Split(text, "\n") {
		name, value, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(name) == "Transport" && strings.TrimSpace(value) == want {
			return true
		}
	}
	return false
}
