//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// `teledock uninstall --agents` removes every agent and puts the pod templates back exactly as they
// were before the first intercept; the traffic-manager stays.
func TestUninstallAgentsRestoresTemplates(t *testing.T) {
	ensureManager(t)
	ns := newNamespace(t)
	deployEcho(t, ns, "echo")
	template := func() string {
		return must(t, kubectl(t, "-n", ns, "get", "deployment/echo", "-o", "jsonpath={.spec.template}"), "get the pod template")
	}
	before := template()
	conn := connect(t, ns)
	ic := interceptor{t: t, ns: ns, conn: conn}
	ic.handler("h-uninstall", 8080)
	ic.intercept("echo", "--port", "8080:http")
	must(t, teledock(t, "leave", "echo", "--name", conn), "leave")
	if template() == before {
		t.Fatal("the first intercept did not change the pod template (no rollout?), so this test proves nothing")
	}
	if containers := jsonpath(t, ns, "pods -l app=echo", "{.items[*].spec.containers[*].name}"); !strings.Contains(containers, "traffic-agent") {
		t.Fatalf("the pods have no traffic-agent after an intercept: %s", containers)
	}

	must(t, teledock(t, "uninstall", "--agents", "--kubeconfig", cfg.kubeconfig, "--manager-namespace", managerNamespace), "uninstall --agents")
	if after := template(); after != before {
		t.Errorf("pod template not restored exactly:\nbefore: %s\nafter:  %s", before, after)
	}
	eventually(t, 120*time.Second, "pods without the traffic-agent", func() error {
		c := jsonpath(t, ns, "pods -l app=echo", "{.items[*].spec.containers[*].name}")
		if strings.Contains(c, "traffic-agent") || strings.TrimSpace(c) == "" {
			return fmt.Errorf("containers: %q", c)
		}
		return nil
	})
	if r := kubectl(t, "-n", ns, "get", "configmap", "teledock-agents"); r.err == nil {
		t.Errorf("the agent config is still there after uninstall --agents")
	}
	must(t, kubectl(t, "-n", managerNamespace, "get", "deployment/traffic-manager"), "the traffic-manager stays")
}
