//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestUninstallAfterFaults: a manager of its own goes through the faults of the other tests — an
// `intercept --docker-run` killed with SIGKILL, a daemon container killed with an intercept, the
// manager's pod deleted — and then `uninstall` still leaves every pod template exactly as it was,
// no traffic-agent in any pod, and no agent config, webhook or RBAC object of that manager.
func TestUninstallAfterFaults(t *testing.T) {
	mgr := fmt.Sprintf("e2e-faults-%d", time.Now().UnixNano()%1e6)
	uninstall := append([]string{"uninstall"}, installArgs(mgr)[:4]...)
	t.Cleanup(func() { teledock(t, uninstall...) })
	must(t, teledock(t, append([]string{"install"}, installArgs(mgr)...)...), "install a manager for this test")

	ns := newNamespace(t)
	apps := []string{"echo", "second"}
	before := map[string]string{}
	template := func(app string) string {
		return must(t, kubectl(t, "-n", ns, "get", "deployment/"+app, "-o", "jsonpath={.spec.template}"), "the pod template of "+app)
	}
	for _, app := range apps {
		deployEcho(t, ns, app)
		before[app] = template(app)
	}
	conn := connName(t, "")
	connectTo := func() {
		must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
			"--manager-namespace", mgr, "--image", image("daemon")), "connect")
	}
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	connectTo()

	// An intercept --docker-run, killed.
	handler := conn + "-h"
	cmd, out := dockerRunIntercept(t, conn, "echo", handler)
	eventually(t, 2*time.Minute, "the handler of echo runs", func() error {
		if r := docker(t, "inspect", "-f", "{{.State.Running}}", handler); strings.TrimSpace(r.stdout) != "true" {
			return fmt.Errorf("handler: %s %v\n%s", r.stdout, r.err, out.String())
		}
		return nil
	})
	_ = cmd.Process.Kill()

	// A plain intercept, and its daemon killed.
	must(t, teledock(t, "intercept", "second", "--port", "8080", "--name", conn), "intercept second")
	must(t, docker(t, "kill", "teledock-daemon-"+conn), "kill the daemon")

	// The manager's pod deleted; its replacement must be ready before uninstall asks it nothing.
	must(t, kubectl(t, "-n", mgr, "delete", "pod", "-l", "app.kubernetes.io/name=traffic-manager", "--wait=false"), "delete the manager's pod")
	must(t, kubectl(t, "-n", mgr, "rollout", "status", "deployment/traffic-manager", "--timeout=120s"), "the manager back")

	for _, app := range apps {
		if template(app) == before[app] {
			t.Fatalf("the intercept of %s did not change its pod template, so this test proves nothing", app)
		}
	}
	must(t, teledock(t, uninstall...), "uninstall after the faults")

	for _, app := range apps {
		if after := template(app); after != before[app] {
			t.Errorf("the pod template of %s not restored exactly:\nbefore: %s\nafter:  %s", app, before[app], after)
		}
		eventually(t, 2*time.Minute, "pods of "+app+" without the traffic-agent", func() error {
			c := jsonpath(t, ns, "pods -l app="+app, "{.items[*].spec.containers[*].name}")
			if strings.Contains(c, "traffic-agent") || strings.TrimSpace(c) == "" {
				return fmt.Errorf("containers: %q", c)
			}
			return nil
		})
	}
	if r := kubectl(t, "-n", ns, "get", "configmap", "teledock-agents"); r.err == nil {
		t.Errorf("the agent config is still there after uninstall")
	}
	for _, obj := range []string{"mutatingwebhookconfiguration/teledock-agent-injector-" + mgr,
		"clusterrole/teledock-traffic-manager-" + mgr, "clusterrolebinding/teledock-traffic-manager-" + mgr, "namespace/" + mgr} {
		if r := kubectl(t, "get", obj); r.err == nil {
			t.Errorf("%s is still there after uninstall", obj)
		}
	}
	if r := kubectl(t, "get", "clusterrole,clusterrolebinding,mutatingwebhookconfiguration", "-o", "name"); strings.Contains(r.stdout, mgr) {
		t.Errorf("cluster-scoped objects of %s left:\n%s", mgr, r.stdout)
	}
}
