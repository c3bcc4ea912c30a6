//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// When the agent cannot arrive (here: its image is not on the node), intercept fails within its
// deadline, says why from the pod's state, and takes nothing over.
func TestInterceptExplainsAMissingAgent(t *testing.T) {
	mgr := fmt.Sprintf("e2e-noagent-%d", time.Now().UnixNano()%1e6)
	args := []string{"--kubeconfig", cfg.kubeconfig, "--manager-namespace", mgr}
	// Its webhook would inject the missing agent into every later test's annotated workloads.
	t.Cleanup(func() {
		eventually(t, 2*time.Minute, "uninstall of "+mgr, func() error {
			if r := teledock(t, append([]string{"uninstall"}, args...)...); r.err != nil {
				return fmt.Errorf("%v: %s", r.err, r.stderr)
			}
			return nil
		})
	})
	must(t, teledock(t, append(append([]string{"install"}, args...), "--image", image("traffic-manager"),
		"--agent-image", "teledock/traffic-agent:does-not-exist")...), "install a manager with a missing agent image")

	ns := newNamespace(t)
	app := deployEcho(t, ns, "echo")
	conn := connName(t, "")
	t.Cleanup(func() { teledock(t, "quit", "--name", conn) })
	must(t, teledock(t, "connect", "--kubeconfig", cfg.kubeconfig, "-n", ns, "--name", conn,
		"--manager-namespace", mgr, "--image", image("daemon")), "connect")

	start := time.Now()
	r := teledock(t, "intercept", "echo", "--port", "8080:http", "--timeout", "40s", "--name", conn)
	if r.err == nil {
		t.Fatalf("intercept succeeded with an agent image that does not exist:\n%s", r.stdout)
	}
	if took := time.Since(start); took > 60*time.Second {
		t.Errorf("intercept took %s to fail with --timeout 40s", took)
	}
	if !strings.Contains(r.stderr, "does-not-exist") && !strings.Contains(r.stderr, "ErrImageNeverPull") {
		t.Errorf("the error does not say the agent's image is missing:\n%s", r.stderr)
	}
	// The cluster is as it was: the workload's template loses the rollout annotation again.
	eventually(t, 60*time.Second, "the workload's template restored", func() error {
		if a := jsonpath(t, ns, "deployment/echo", "{.spec.template.metadata.annotations}"); strings.Contains(a, "teledock.dev/agent-rollout") {
			return fmt.Errorf("annotations: %s", a)
		}
		return nil
	})
	// Nothing was taken over: the Service still answers from the app (through teledock's own view).
	out := must(t, inCluster(t, conn, "http", "http://echo/"), "GET http://echo/")
	if !strings.HasPrefix(out, app.Text) {
		t.Errorf("after a failed intercept http://echo/ = %q, want the app", out)
	}
}
