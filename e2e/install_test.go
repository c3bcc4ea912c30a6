//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// installArgs are the flags that put a manager of this build into ns.
func installArgs(ns string) []string {
	return []string{"--kubeconfig", cfg.kubeconfig, "--manager-namespace", ns, "--image", image("traffic-manager")}
}

// uninstallWhenDone uninstalls a test's own manager (args select it) when the test ends, retrying:
// its webhook would otherwise inject into every later test's workloads.
func uninstallWhenDone(t testing.TB, mgr string, args []string) {
	t.Cleanup(func() {
		eventually(t, 2*time.Minute, "uninstall of "+mgr, func() error {
			if r := teledock(t, append([]string{"uninstall"}, args...)...); r.err != nil {
				return fmt.Errorf("%v: %s", r.err, r.stderr)
			}
			return nil
		})
	})
}

// A second install upgrades in place; uninstall removes the namespace and the cluster-scoped RBAC
// it made, and is idempotent.
func TestInstallIsIdempotentAndUninstallRemovesEverything(t *testing.T) {
	ns := "e2e-install-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	t.Cleanup(func() { teledock(t, append([]string{"uninstall"}, installArgs(ns)[:4]...)...) })
	r := teledock(t, append([]string{"install"}, installArgs(ns)...)...)
	must(t, r, "first install")
	if !strings.Contains(r.stderr, "Installing") {
		t.Errorf("first install did not say it installs: %s", r.stderr)
	}
	r = teledock(t, append([]string{"install"}, installArgs(ns)...)...)
	must(t, r, "second install")
	if !strings.Contains(r.stderr, "Upgrading") {
		t.Errorf("second install did not upgrade: %s", r.stderr)
	}
	if ready := jsonpath(t, ns, "deployment/traffic-manager", "{.status.readyReplicas}"); ready != "1" {
		t.Fatalf("traffic-manager ready replicas = %q, want 1", ready)
	}
	clusterRole := "teledock-traffic-manager-" + ns
	must(t, kubectl(t, "get", "clusterrole", clusterRole), "the manager's ClusterRole exists")

	must(t, teledock(t, append([]string{"uninstall"}, installArgs(ns)[:4]...)...), "uninstall")
	if r := kubectl(t, "get", "namespace", ns); r.err == nil {
		t.Errorf("namespace %s still exists after uninstall", ns)
	}
	if r := kubectl(t, "get", "clusterrole", clusterRole); r.err == nil {
		t.Errorf("ClusterRole %s still exists after uninstall", clusterRole)
	}
	must(t, teledock(t, append([]string{"uninstall"}, installArgs(ns)[:4]...)...), "second uninstall")
}

// The chart in cluster/ is a plain Helm chart: `helm install` deploys a working manager.
func TestChartInstallsWithHelm(t *testing.T) {
	helm := os.Getenv("TELEDOCK_E2E_HELM")
	if helm == "" {
		t.Fatal("TELEDOCK_E2E_HELM is not set (run through make test-e2e)")
	}
	ns := "e2e-helm-" + fmt.Sprint(time.Now().UnixNano()%1e6)
	h := func(args ...string) cmdResult {
		return run(t, 3*time.Minute, helm, append([]string{"--kubeconfig", cfg.kubeconfig}, args...)...)
	}
	t.Cleanup(func() {
		h("uninstall", "traffic-manager", "-n", ns, "--wait")
		kubectl(t, "delete", "namespace", ns, "--wait=false")
	})
	must(t, h("install", "traffic-manager", "../cluster/chart", "-n", ns, "--create-namespace",
		"--set", "image.tag="+cfg.version, "--wait", "--timeout", "2m"), "helm install")
	if ready := jsonpath(t, ns, "deployment/traffic-manager", "{.status.readyReplicas}"); ready != "1" {
		t.Fatalf("traffic-manager ready replicas after helm install = %q, want 1", ready)
	}
	// A connection works against the helm-installed manager.
	app := deployEcho(t, newNamespace(t), "echo")
	conn := "e2e-helm"
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", app.Namespace, "--name", conn,
		"--manager-namespace", ns, "--image", image("daemon")), "connect to the helm-installed manager")
	out := must(t, inCluster(t, conn, "http", "http://echo/"), "GET http://echo/")
	if !strings.HasPrefix(out, app.Text) {
		t.Errorf("GET http://echo/ = %q, want %q", out, app.Text)
	}
}
